package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// rawCodec sends and receives bytes as they are, so fuzz inputs reach the
// server's decoder unchanged.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// panicked reports whether a status is the recovery interceptor's answer to
// a panic.
func panicked(st *status.Status) bool {
	return st.Code() == codes.Internal && strings.Contains(st.Message(), "internal error")
}

// FuzzChatFrame sends arbitrary bytes as a Chat frame. Whatever they are,
// the server must not panic, must answer bad frames with error frames and
// must keep the stream open: a ping after each input gets its pong.
func FuzzChatFrame(f *testing.F) {
	n := start(f, "")
	alice := register(f, n, "alice")
	conv := room(f, alice, "fuzz")
	for _, m := range []*parleyv1.ChatRequest{
		{FrameId: 1, Frame: &parleyv1.ChatRequest_Send{Send: &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "m1", Body: "hi"}}},
		{Frame: &parleyv1.ChatRequest_Subscribe{Subscribe: &parleyv1.SubscribePosition{ConversationId: conv, AfterSeq: 1 << 63}}},
		{Frame: &parleyv1.ChatRequest_Edit{Edit: &parleyv1.EditMessageRequest{ConversationId: conv, Seq: 1, ClientMessageId: "e", Body: "x"}}},
		{Frame: &parleyv1.ChatRequest_Read{Read: &parleyv1.MarkReadRequest{ConversationId: conv, Seq: 1}}},
		{Frame: &parleyv1.ChatRequest_Typing{Typing: &parleyv1.SetTypingRequest{ConversationId: "dm:a:b", Typing: true}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x05, 0x0a, 0x03, 0xff, 0xfe, 0xfd}) // invalid UTF-8 in a string
	f.Add(bytes.Repeat([]byte{0x12, 0x7f}, 50))             // lengths past the end

	conn, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		f.Fatal(err)
	}
	defer conn.Close()
	desc := &grpc.StreamDesc{StreamName: "Chat", ServerStreams: true, ClientStreams: true}
	stream, err := conn.NewStream(alice.ctx(f), desc, "/parley.v1.ChatService/Chat")
	if err != nil {
		f.Fatal(err)
	}
	var nonce uint64
	f.Fuzz(func(t *testing.T, data []byte) {
		nonce++
		if err := stream.SendMsg(&data); err != nil {
			t.Fatalf("send: %v", err)
		}
		ping, _ := proto.Marshal(&parleyv1.ChatRequest{Frame: &parleyv1.ChatRequest_Ping{Ping: &parleyv1.Ping{Nonce: nonce}}})
		if err := stream.SendMsg(&ping); err != nil {
			t.Fatalf("send ping: %v", err)
		}
		for {
			var raw []byte
			if err := stream.RecvMsg(&raw); err != nil {
				t.Fatalf("input %x ended the stream: %v", data, err)
			}
			var resp parleyv1.ChatResponse
			if err := proto.Unmarshal(raw, &resp); err != nil {
				t.Fatalf("server sent an undecodable frame: %v", err)
			}
			if e := resp.GetError(); e != nil && (e.GetCode() == 0 || e.GetMessage() == "") {
				t.Fatalf("error frame without a code or message: %v", e)
			}
			if resp.GetPong().GetNonce() == nonce {
				return
			}
		}
	})
}

// unaryMethods are the RPCs FuzzUnary calls, by index.
var unaryMethods = []string{
	"/parley.v1.ChatService/Send",
	"/parley.v1.ChatService/History",
	"/parley.v1.ChatService/MarkRead",
	"/parley.v1.ChatService/EditMessage",
	"/parley.v1.ChatService/GetPresence",
	"/parley.v1.ConversationService/CreateGroup",
	"/parley.v1.ConversationService/AddMember",
	"/parley.v1.ConversationService/JoinRoom",
	"/parley.v1.AuthService/Login",
	"/parley.v1.AttachmentService/Upload",
	"/parley.v1.AuthService/DeleteAccount",
}

// FuzzUnary calls a unary RPC (chosen by the first byte) with arbitrary
// bytes. The answer is always a status a client can act on, never a panic.
func FuzzUnary(f *testing.F) {
	n := start(f, "")
	alice := register(f, n, "alice")
	conv := room(f, alice, "fuzz")
	seeds := []proto.Message{
		&parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "x", Body: "hello"},
		&parleyv1.HistoryRequest{ConversationId: conv, Limit: -5},
		&parleyv1.MarkReadRequest{ConversationId: conv, Seq: ^uint64(0)},
		&parleyv1.EditMessageRequest{ConversationId: conv, Seq: 1, ClientMessageId: "e", Body: "x"},
		&parleyv1.GetPresenceRequest{UserIds: []string{"a", "bb", alice.id}},
		&parleyv1.CreateGroupRequest{Title: "g", MemberIds: []string{alice.id, "nobody"}},
		&parleyv1.AddMemberRequest{ConversationId: "group:000000000000000000000000", UserId: alice.id},
		&parleyv1.JoinRoomRequest{ConversationId: conv},
		&parleyv1.LoginRequest{Username: alice.id, Password: "wrong"},
		&parleyv1.UploadRequest{Name: "a.txt", ContentType: "text/plain", Data: []byte("hi")},
		&parleyv1.DeleteAccountRequest{Username: alice.id, Password: "wrong"},
	}
	for i, m := range seeds {
		b, _ := proto.Marshal(m)
		f.Add(byte(i), b)
	}
	f.Add(byte(0), []byte{0xff, 0xff, 0xff})

	conn, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		f.Fatal(err)
	}
	defer conn.Close()
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		method := unaryMethods[int(which)%len(unaryMethods)]
		ctx, cancel := context.WithTimeout(alice.ctx(t), 10*time.Second)
		defer cancel()
		var out []byte
		err := conn.Invoke(ctx, method, &data, &out)
		st, _ := status.FromError(err)
		if panicked(st) || st.Code() == codes.Unknown || st.Code() == codes.DeadlineExceeded {
			t.Fatalf("%s(%x) = %v", method, data, err)
		}
	})
}

// FuzzGRPCWeb posts an arbitrary grpc-web body to Send over HTTP/1.1. The
// server answers with a grpc-status, never a panic or a hung request, and
// keeps serving.
func FuzzGRPCWeb(f *testing.F) {
	n := start(f, "")
	alice := register(f, n, "alice")
	conv := room(f, alice, "fuzz")
	ok, _ := proto.Marshal(&parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "w", Body: "hi"})
	f.Add(encodeWebFrame(0, ok))
	f.Add(encodeWebFrame(0x80, []byte("grpc-status: 0\r\n")))
	f.Add(encodeWebFrame(1, ok)) // compressed flag without compression
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff})
	f.Add(append(encodeWebFrame(0, ok), encodeWebFrame(0, ok)...))

	hc := &http.Client{Timeout: 10 * time.Second}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, _ := http.NewRequest("POST", "http://"+n.addr+"/parley.v1.ChatService/Send", bytes.NewReader(body))
		req.Header.Set("content-type", "application/grpc-web+proto")
		req.Header.Set("x-grpc-web", "1")
		req.Header.Set("authorization", "Bearer "+alice.token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("request failed: %v", err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("HTTP %d for %x", resp.StatusCode, body)
		}
		code := resp.Header.Get("grpc-status")
		msg := resp.Header.Get("grpc-message")
		if code == "" && !bytes.Contains(data, []byte("grpc-status:")) {
			t.Fatalf("no grpc-status in headers or trailers for %x: %q", body, data)
		}
		if code == fmt.Sprint(int(codes.Internal)) && strings.Contains(msg, "internal error") {
			t.Fatalf("panic for %x", body)
		}
	})
}
