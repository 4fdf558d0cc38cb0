package chat

import (
	"bytes"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/router"
)

// Codec returns the server's gRPC codec: protobuf, except that a
// *router.Frame is sent as the bytes it already holds. That is what lets the
// router encode a message once for every recipient. Install it with
// grpc.ForceServerCodecV2.
func Codec() encoding.CodecV2 {
	return frameCodec{proto: encoding.GetCodecV2(grpcproto.Name)}
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

// Unmarshal decodes with protobuf. A Chat frame that does not decode is
// not an error here: grpc-go would end the whole stream with INTERNAL, and
// a bad frame must only get an error frame. It is handed on empty, marked
// by markUndecodable.
func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.proto.Unmarshal(data, v)
	if req, ok := v.(*parleyv1.ChatRequest); ok && err != nil {
		proto.Reset(req)
		req.ProtoReflect().SetUnknown(undecodableMark)
		return nil
	}
	return err
}

// undecodableMark is an unknown field with the largest field number, which
// no version of the contract will use.
var undecodableMark = protowire.AppendVarint(protowire.AppendTag(nil, protowire.MaxValidNumber, protowire.VarintType), 1)

// undecodable reports whether req is a frame the codec could not decode.
func undecodable(req *parleyv1.ChatRequest) bool {
	return bytes.Equal(req.ProtoReflect().GetUnknown(), undecodableMark)
}

func (c frameCodec) Name() string { return grpcproto.Name }
