package chat

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	"github.com/parleychat/parley/server/router"
)

// Codec returns the server's gRPC codec: protobuf, except that a
// *router.Frame is sent as the bytes it already holds. That is what lets the
// router encode a message once for every recipient. Install it with
// grpc.ForceServerCodecV2.
func Codec() encoding.CodecV2 {
	return frameCodec{proto: encoding.GetCodecV2(proto.Name)}
}

type frameCodec struct{ proto encoding.CodecV2 }

func (c frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*router.Frame); ok {
		// SliceBuffer does not recycle on Free, so the shared bytes stay intact
		// for the other streams sending the same frame.
		return mem.BufferSlice{mem.SliceBuffer(f.Data)}, nil
	}
	return c.proto.Marshal(v)
}

func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c frameCodec) Name() string { return proto.Name }
