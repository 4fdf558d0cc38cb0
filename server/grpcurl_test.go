package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// These tests run the real grpcurl against a node, as README.md tells
// people to: they prove that reflection describes the whole API and that
// a generic client, knowing nothing but the port, can register, create a
// room, send and read back.

// grpcurlExitOffset is what grpcurl adds to a failed RPC's status code to
// make its exit code.
const grpcurlExitOffset = 64

// grpcurlBin finds grpcurl: $PARLEY_GRPCURL (set by the Makefile), then the
// repository's bin/grpcurl, then $PATH. Without one the test is skipped.
func grpcurlBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PARLEY_GRPCURL"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("PARLEY_GRPCURL: %v", err)
		}
		return p
	}
	if p, err := filepath.Abs(filepath.Join("..", "bin", "grpcurl")); err == nil {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	t.Skip("grpcurl not found in $PARLEY_GRPCURL, bin/grpcurl or $PATH; `make test` installs it into bin/")
	return ""
}

type grpcurlResult struct {
	stdout, stderr string
	exit           int
}

// grpcurl runs bin with -plaintext and args, bounded in time. A failure to
// run it at all fails the test; a non-zero exit is returned.
func grpcurl(t testing.TB, bin string, args ...string) grpcurlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-plaintext", "-max-time", "20"}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("grpcurl %q: %v", args, ctx.Err())
	}
	res := grpcurlResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.exit = exit.ExitCode()
	default:
		t.Fatalf("grpcurl %q: %v", args, err)
	}
	return res
}

// grpcurlCall invokes method with req as JSON and decodes the JSON answer into
// resp. token may be empty.
func grpcurlCall(t testing.TB, bin, addr, token, method string, req, resp proto.Message) {
	t.Helper()
	data, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-d", string(data)}
	if token != "" {
		args = append(args, "-H", "authorization: Bearer "+token)
	}
	res := grpcurl(t, bin, append(args, addr, method)...)
	if res.exit != 0 {
		t.Fatalf("grpcurl %s: exit %d\n%s%s", method, res.exit, res.stdout, res.stderr)
	}
	if err := protojson.Unmarshal([]byte(res.stdout), resp); err != nil {
		t.Fatalf("grpcurl %s: decode %q: %v", method, res.stdout, err)
	}
}

func TestGRPCurlReflection(t *testing.T) {
	bin := grpcurlBin(t)
	n := start(t, "")

	res := grpcurl(t, bin, n.addr, "list")
	if res.exit != 0 {
		t.Fatalf("list: exit %d: %s", res.exit, res.stderr)
	}
	services := strings.Fields(res.stdout)
	for _, want := range []string{"parley.v1.ChatService", "parley.v1.AuthService", "parley.v1.ConversationService", "grpc.health.v1.Health"} {
		if !slices.Contains(services, want) {
			t.Errorf("list lacks %s: %q", want, services)
		}
	}

	res = grpcurl(t, bin, n.addr, "describe", "parley.v1.ChatService")
	if res.exit != 0 {
		t.Fatalf("describe: exit %d: %s", res.exit, res.stderr)
	}
	for _, want := range []string{
		"rpc Send ( .parley.v1.SendRequest ) returns ( .parley.v1.SendResponse )",
		"rpc Subscribe ( .parley.v1.SubscribeRequest ) returns ( stream .parley.v1.SubscribeResponse )",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("describe parley.v1.ChatService lacks %q:\n%s", want, res.stdout)
		}
	}
}

func TestGRPCurlChat(t *testing.T) {
	bin := grpcurlBin(t)
	n := start(t, "")
	name := fmt.Sprintf("curl%d", userSeq.Add(1))

	reg := &parleyv1.RegisterResponse{}
	grpcurlCall(t, bin, n.addr, "", "parley.v1.AuthService/Register",
		&parleyv1.RegisterRequest{Username: name, Password: "correct horse"}, reg)
	token := reg.GetToken().GetValue()
	if reg.GetUserId() != name || token == "" {
		t.Fatalf("Register: %v", reg)
	}

	created := &parleyv1.CreateRoomResponse{}
	grpcurlCall(t, bin, n.addr, token, "parley.v1.ConversationService/CreateRoom",
		&parleyv1.CreateRoomRequest{Name: "lobby"}, created)
	if id := created.GetConversation().GetId(); id != "room:lobby" {
		t.Fatalf("CreateRoom: conversation %q; want room:lobby", id)
	}

	ack := &parleyv1.SendResponse{}
	grpcurlCall(t, bin, n.addr, token, "parley.v1.ChatService/Send",
		&parleyv1.SendRequest{ConversationId: "room:lobby", ClientMessageId: "curl-1", Body: "hello from grpcurl"}, ack)
	if ack.GetSeq() == 0 || ack.GetConversationId() != "room:lobby" || ack.GetClientMessageId() != "curl-1" {
		t.Fatalf("Send: %v", ack)
	}

	hist := &parleyv1.HistoryResponse{}
	grpcurlCall(t, bin, n.addr, token, "parley.v1.ChatService/History",
		&parleyv1.HistoryRequest{ConversationId: "room:lobby"}, hist)
	if len(hist.GetMessages()) != 1 {
		t.Fatalf("History: %d messages; want 1: %v", len(hist.GetMessages()), hist)
	}
	if m := hist.GetMessages()[0]; m.GetBody() != "hello from grpcurl" || m.GetSeq() != ack.GetSeq() || m.GetSenderId() != name {
		t.Errorf("History: %v; want body %q seq %d from %s", m, "hello from grpcurl", ack.GetSeq(), name)
	}

	t.Run("no token", func(t *testing.T) {
		res := grpcurl(t, bin, "-d", `{"conversationId":"room:lobby","clientMessageId":"curl-2","body":"sneaky"}`,
			n.addr, "parley.v1.ChatService/Send")
		if want := grpcurlExitOffset + int(codes.Unauthenticated); res.exit != want {
			t.Errorf("exit %d; want %d (grpcurl exits with 64 + the status code)", res.exit, want)
		}
		if !strings.Contains(res.stderr, "Code: Unauthenticated") {
			t.Errorf("stderr lacks Code: Unauthenticated:\n%s", res.stderr)
		}
		again := &parleyv1.HistoryResponse{}
		grpcurlCall(t, bin, n.addr, token, "parley.v1.ChatService/History",
			&parleyv1.HistoryRequest{ConversationId: "room:lobby"}, again)
		if len(again.GetMessages()) != 1 {
			t.Errorf("History after the refused send: %v", again.GetMessages())
		}
	})
}
