package bench

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	protobuf "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// Baseline is the bare grpc-go fan-out server that Parley's numbers are
// divided by. It implements only ChatService.Chat, with the least a
// correct fan-out needs and nothing else: no auth (the bearer value is
// taken as the user id unchecked), no membership, no router, no store, no
// dedup, no replay. It numbers each conversation's messages so that
// subscribers can check order, encodes each message once for all
// recipients (as Parley does), fans it out to every stream subscribed to
// the conversation and acknowledges it at once.
//
// Each stream has one writer goroutine (the handler's) draining a bounded
// queue, and one reader goroutine. A full queue blocks the publisher
// instead of cutting the stream: with no log to resume from, cutting would
// lose messages, and blocking is what a minimal server does. Baseline is
// safe for concurrent use.
type Baseline struct {
	parleyv1.UnimplementedChatServiceServer

	queue int
	grpc  *grpc.Server
	lis   net.Listener

	mu    sync.Mutex // protects convs
	convs map[string]*baseConv
}

// baseConv is one conversation of the baseline.
type baseConv struct {
	// mu protects last and subs, and is held while a message is fanned
	// out, so every subscriber gets the conversation in seq order and a
	// Subscribed marker comes before every message after its head.
	mu   sync.Mutex
	last uint64
	subs map[*baseStream]struct{}
}

// baseStream is one Chat stream's bounded queue.
type baseStream struct {
	q    chan any      // *parleyv1.ChatResponse or baseFrame
	done chan struct{} // closed when the writer has returned
}

// baseFrame is a ChatResponse already encoded; baseCodec sends it as is.
type baseFrame []byte

// NewBaseline returns a baseline server whose streams queue up to queue
// frames (Parley's default is 1024).
func NewBaseline(queue int) *Baseline {
	if queue <= 0 {
		queue = 1024
	}
	b := &Baseline{queue: queue, convs: make(map[string]*baseConv)}
	b.grpc = grpc.NewServer(grpc.ForceServerCodecV2(baseCodec{proto: encoding.GetCodecV2(proto.Name)}))
	parleyv1.RegisterChatServiceServer(b.grpc, b)
	return b
}

// Serve serves on l in the background until Stop.
func (b *Baseline) Serve(l net.Listener) {
	b.lis = l
	go b.grpc.Serve(l)
}

// Addr is the address Serve listens on.
func (b *Baseline) Addr() string { return b.lis.Addr().String() }

// Stop ends every stream and closes the listener. It waits up to a second
// for handlers to return on their own.
func (b *Baseline) Stop() {
	done := make(chan struct{})
	go func() { b.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		b.grpc.Stop()
		<-done
	}
}

func (b *Baseline) conv(id string) *baseConv {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.convs[id]
	if c == nil {
		c = &baseConv{subs: make(map[*baseStream]struct{})}
		b.convs[id] = c
	}
	return c
}

// push queues item for s, waiting while the queue is full; it gives up
// when s's writer is gone.
func (s *baseStream) push(item any) {
	select {
	case s.q <- item:
	case <-s.done:
	}
}

// Chat implements parleyv1.ChatServiceServer. The handler's goroutine is the
// stream's writer.
func (b *Baseline) Chat(stream grpc.BidiStreamingServer[parleyv1.ChatRequest, parleyv1.ChatResponse]) error {
	user := bearer(stream.Context())
	s := &baseStream{q: make(chan any, b.queue), done: make(chan struct{})}
	defer close(s.done)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		b.read(stream, s, user)
	}()
	for {
		select {
		case item := <-s.q:
			if err := stream.SendMsg(item); err != nil {
				return err
			}
		case <-readerDone:
			return nil
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// read is the stream's reader: it publishes sends, and keeps the
// conversations the stream follows.
func (b *Baseline) read(stream grpc.BidiStreamingServer[parleyv1.ChatRequest, parleyv1.ChatResponse], s *baseStream, user string) {
	subs := make(map[string]*baseConv)
	defer func() {
		for _, c := range subs {
			c.mu.Lock()
			delete(c.subs, s)
			c.mu.Unlock()
		}
	}()
	for {
		req, err := stream.Recv()
		if err != nil {
			return
		}
		switch f := req.GetFrame().(type) {
		case *parleyv1.ChatRequest_Send:
			b.publish(s, user, f.Send)
		case *parleyv1.ChatRequest_Subscribe:
			id := f.Subscribe.GetConversationId()
			if subs[id] != nil {
				continue
			}
			c := b.conv(id)
			subs[id] = c
			c.mu.Lock()
			c.subs[s] = struct{}{}
			s.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Subscribed{Subscribed: &parleyv1.Subscribed{
				ConversationId: id, HeadSeq: c.last,
			}}})
			c.mu.Unlock()
		case *parleyv1.ChatRequest_Unsubscribe:
			if c := subs[f.Unsubscribe.GetConversationId()]; c != nil {
				delete(subs, f.Unsubscribe.GetConversationId())
				c.mu.Lock()
				delete(c.subs, s)
				c.mu.Unlock()
			}
		case *parleyv1.ChatRequest_Ping:
			s.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Pong{Pong: &parleyv1.Pong{Nonce: f.Ping.GetNonce()}}})
		}
	}
}

func (b *Baseline) publish(s *baseStream, user string, req *parleyv1.SendRequest) {
	c := b.conv(req.GetConversationId())
	now := timestamppb.Now()
	c.mu.Lock()
	seq := c.last + 1
	data, err := protobuf.Marshal(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Message{Message: &parleyv1.Message{
		ConversationId:  req.GetConversationId(),
		Seq:             seq,
		SenderId:        user,
		ClientMessageId: req.GetClientMessageId(),
		Body:            req.GetBody(),
		SentAt:          now,
		PrevSeq:         c.last,
	}}})
	if err != nil {
		c.mu.Unlock()
		s.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Error{Error: &parleyv1.ErrorFrame{
			Frame: "send", Code: uint32(codes.Internal), Message: err.Error(), ClientMessageId: req.GetClientMessageId(),
		}}})
		return
	}
	c.last = seq
	for sub := range c.subs {
		sub.push(baseFrame(data))
	}
	c.mu.Unlock()
	s.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_SendAck{SendAck: &parleyv1.SendResponse{
		ConversationId:  req.GetConversationId(),
		ClientMessageId: req.GetClientMessageId(),
		Seq:             seq,
		SentAt:          now,
	}}})
}

// bearer returns the token of the authorization header, unchecked.
func bearer(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok {
			return tok
		}
	}
	return ""
}

var _ parleyv1.ChatServiceServer = (*Baseline)(nil)

// baseCodec is protobuf, except that a baseFrame goes out as the bytes it
// holds.
type baseCodec struct{ proto encoding.CodecV2 }

func (c baseCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(baseFrame); ok {
		// A SliceBuffer is not recycled on Free, so the bytes shared by
		// every recipient stay intact.
		return mem.BufferSlice{mem.SliceBuffer(f)}, nil
	}
	return c.proto.Marshal(v)
}

func (c baseCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }
func (c baseCodec) Name() string                                { return proto.Name }

// errBaselineUnsupported is returned for scenarios the baseline cannot run.
var errBaselineUnsupported = errors.New("the baseline server stores nothing, so it has no history to replay")
