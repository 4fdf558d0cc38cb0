package client_test

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/parleychat/parley/client"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/servertest"
)

// eofOnce makes the first Chat stream's first send frame fail with io.EOF
// without sending it, while the stream itself stays open: gRPC's word for
// "the stream is over, Recv has the status", said of a stream whose Recv
// then has nothing to return.
type eofOnce struct{ done atomic.Bool }

func (e *eofOnce) option() client.Option {
	return client.WithDialOptions(grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != parleyv1.ChatService_Chat_FullMethodName {
			return cs, err
		}
		return &eofStream{ClientStream: cs, e: e}, nil
	}))
}

type eofStream struct {
	grpc.ClientStream
	e *eofOnce
}

func (s *eofStream) SendMsg(m any) error {
	if req, ok := m.(*parleyv1.ChatRequest); ok && req.GetSend() != nil && s.e.done.CompareAndSwap(false, true) {
		return io.EOF
	}
	return s.ClientStream.SendMsg(m)
}

// TestWriterEOFWithStreamOpen: a send that fails with io.EOF on a stream
// that does not end must not leave the Session with no writer, its sends
// queued for good and no ping to notice. The stream is ended and the send
// goes out on the next one.
func TestWriterEOFWithStreamOpen(t *testing.T) {
	n := servertest.Start(t, "")
	ctx := testCtx(t)
	e := &eofOnce{}
	alice := join(t, n.Addr, "alice", e.option())
	bob := join(t, n.Addr, "bob")
	room := openRoom(t, alice, "lobby", bob)

	s, _ := record(t, alice, fast(client.WithPing(50*time.Millisecond, 300*time.Millisecond))...)
	for i, body := range []string{"first", "second"} {
		ack, err := s.Send(ctx, room, body)
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if ack.GetSeq() == 0 {
			t.Fatalf("send %d acked without a seq", i)
		}
	}
	if !e.done.Load() {
		t.Fatal("the interceptor never failed a send: the test tests nothing")
	}
}
