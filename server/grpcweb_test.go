package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// These tests speak grpc-web by hand, the way a browser does: HTTP/1.1,
// length-prefixed frames in the body, and the status in a trailer frame at
// its end. They go through the same port as native gRPC, so they also prove
// that cmux hands HTTP/1.1 to net/http and the grpc-web wrapper.

// grpc-web frame flags (PROTOCOL-WEB.md): bit 7 set marks the trailer frame.
const (
	webData    byte = 0x00
	webTrailer byte = 0x80
)

// maxWebFrame bounds the length a test will believe, so a corrupt prefix
// fails the test instead of allocating gigabytes.
const maxWebFrame = 4 << 20

// webFrame is one grpc-web frame.
type webFrame struct {
	flag    byte
	payload []byte
}

// encodeWebFrame returns flag, the big-endian length of payload, and payload.
func encodeWebFrame(flag byte, payload []byte) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = flag
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

// readWebFrame reads the next frame from r. It returns io.EOF only when r
// ends exactly between frames; a body cut inside a frame is
// io.ErrUnexpectedEOF.
func readWebFrame(r io.Reader) (webFrame, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return webFrame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxWebFrame {
		return webFrame{}, fmt.Errorf("grpc-web frame of %d bytes", n)
	}
	if hdr[0] != webData && hdr[0] != webTrailer {
		return webFrame{}, fmt.Errorf("grpc-web frame with flag %#x (compressed or unknown)", hdr[0])
	}
	f := webFrame{flag: hdr[0], payload: make([]byte, n)}
	if _, err := io.ReadFull(r, f.payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return webFrame{}, err
	}
	return f, nil
}

// parseWebTrailer parses a trailer frame's payload, HTTP-header-style lines
// ("grpc-status: 0\r\n"), into a map with lower-case keys.
func parseWebTrailer(p []byte) (map[string]string, error) {
	tr := make(map[string]string)
	for _, line := range strings.Split(string(p), "\r\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("trailer line %q has no colon", line)
		}
		tr[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	return tr, nil
}

// webClient calls a node over grpc-web on HTTP/1.1 only.
type webClient struct {
	base string
	hc   *http.Client
}

func newWebClient(t testing.TB, n *node) *webClient {
	tr := &http.Transport{
		ForceAttemptHTTP2: false,
		// A non-nil empty map switches HTTP/2 off altogether, as a browser
		// talking to an HTTP/1.1 proxy would have it.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &webClient{base: "http://" + n.addr, hc: &http.Client{Transport: tr}}
}

// post sends one grpc-web request whose body is frames, and returns the
// response with its body unread. token may be empty.
func (c *webClient) post(ctx context.Context, t testing.TB, method, token string, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+method, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc-web+proto")
	req.Header.Set("Accept", "application/grpc-web+proto")
	req.Header.Set("X-Grpc-Web", "1")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", method, err)
	}
	if resp.ProtoMajor != 1 {
		resp.Body.Close()
		t.Fatalf("POST %s: answered over %s; want HTTP/1.x", method, resp.Proto)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("POST %s: HTTP %s: %q", method, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/grpc-web") {
		resp.Body.Close()
		t.Fatalf("POST %s: Content-Type %q; want application/grpc-web+proto", method, ct)
	}
	return resp
}

// webResult is a whole grpc-web response: its data frames and its status.
type webResult struct {
	header  http.Header
	data    [][]byte
	trailer map[string]string // the trailer frame; nil if none came
}

// code is the call's status. It comes from the trailer frame, or from the
// headers of a trailers-only response; both are valid grpc-web. When both
// carry one, they must agree.
func (r *webResult) code(t testing.TB) (codes.Code, string) {
	t.Helper()
	hs, inHeader := r.header.Get("Grpc-Status"), r.header.Get("Grpc-Status") != ""
	ts, inTrailer := r.trailer["grpc-status"]
	s, msg := ts, r.trailer["grpc-message"]
	switch {
	case inTrailer && inHeader && hs != ts:
		t.Fatalf("grpc-status %q in the headers but %q in the trailer frame", hs, ts)
	case !inTrailer && inHeader:
		s, msg = hs, r.header.Get("Grpc-Message")
	case !inTrailer:
		t.Fatalf("no grpc-status in the trailer frame %q or the headers %v", r.trailer, r.header)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		t.Fatalf("grpc-status %q: %v", s, err)
	}
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m // grpc-message is percent-encoded
	}
	return codes.Code(n), msg
}

// call makes a unary grpc-web call with req as its one message and reads
// the whole response. The trailer frame must be the last thing in the body.
func (c *webClient) call(t testing.TB, method, token string, req proto.Message) *webResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var body []byte
	if req != nil {
		p, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		body = encodeWebFrame(webData, p)
	}
	resp := c.post(ctx, t, method, token, body)
	defer resp.Body.Close()
	res := &webResult{header: resp.Header}
	for {
		f, err := readWebFrame(resp.Body)
		if err == io.EOF {
			return res
		}
		if err != nil {
			t.Fatalf("%s: reading the response: %v", method, err)
		}
		if res.trailer != nil {
			t.Fatalf("%s: a frame (flag %#x) after the trailer frame", method, f.flag)
		}
		if f.flag == webTrailer {
			if res.trailer, err = parseWebTrailer(f.payload); err != nil {
				t.Fatalf("%s: %v", method, err)
			}
			continue
		}
		res.data = append(res.data, f.payload)
	}
}

// unary makes a call that must succeed and decodes its one response into out.
func (c *webClient) unary(t testing.TB, method, token string, req, out proto.Message) {
	t.Helper()
	res := c.call(t, method, token, req)
	if code, msg := res.code(t); code != codes.OK {
		t.Fatalf("%s: %v: %s", method, code, msg)
	}
	if len(res.data) != 1 {
		t.Fatalf("%s: %d data frames; want 1", method, len(res.data))
	}
	if err := proto.Unmarshal(res.data[0], out); err != nil {
		t.Fatalf("%s: decode response: %v", method, err)
	}
}

func TestGRPCWebSendHistory(t *testing.T) {
	n := start(t, "")
	alice := register(t, n, "alice")
	conv := room(t, alice, "web")
	c := newWebClient(t, n)

	var acks []*parleyv1.SendResponse
	for i, body := range []string{"hello from a browser", "second"} {
		ack := &parleyv1.SendResponse{}
		c.unary(t, parleyv1.ChatService_Send_FullMethodName, alice.token,
			&parleyv1.SendRequest{ConversationId: conv, ClientMessageId: fmt.Sprintf("web-%d", i), Body: body}, ack)
		if ack.GetConversationId() != conv || ack.GetClientMessageId() != fmt.Sprintf("web-%d", i) || ack.GetSeq() == 0 || ack.GetDuplicate() {
			t.Fatalf("Send %d: ack %v", i, ack)
		}
		if i > 0 && ack.GetSeq() <= acks[i-1].GetSeq() {
			t.Fatalf("Send %d: seq %d after %d", i, ack.GetSeq(), acks[i-1].GetSeq())
		}
		acks = append(acks, ack)
	}

	// A resend under the same id is answered with the first ack, over
	// grpc-web as over gRPC.
	dup := &parleyv1.SendResponse{}
	c.unary(t, parleyv1.ChatService_Send_FullMethodName, alice.token,
		&parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "web-0", Body: "hello from a browser"}, dup)
	if !dup.GetDuplicate() || dup.GetSeq() != acks[0].GetSeq() {
		t.Fatalf("resend: ack %v; want duplicate of seq %d", dup, acks[0].GetSeq())
	}

	hist := &parleyv1.HistoryResponse{}
	c.unary(t, parleyv1.ChatService_History_FullMethodName, alice.token,
		&parleyv1.HistoryRequest{ConversationId: conv}, hist)
	msgs := hist.GetMessages()
	if len(msgs) != 2 {
		t.Fatalf("History: %d messages; want 2: %v", len(msgs), msgs)
	}
	for i, m := range msgs {
		want := []string{"hello from a browser", "second"}[i]
		if m.GetBody() != want || m.GetSeq() != acks[i].GetSeq() || m.GetSenderId() != alice.id ||
			m.GetConversationId() != conv || m.GetClientMessageId() != fmt.Sprintf("web-%d", i) {
			t.Errorf("History message %d: %v; want body %q seq %d from %s", i, m, want, acks[i].GetSeq(), alice.id)
		}
	}
	if hist.GetHeadSeq() != acks[1].GetSeq() || hist.GetEpoch() != n.Epoch() {
		t.Errorf("History: head_seq %d epoch %q; want %d %q", hist.GetHeadSeq(), hist.GetEpoch(), acks[1].GetSeq(), n.Epoch())
	}
}

// webStream is a server-streaming grpc-web response whose frames one
// goroutine reads into a channel as they arrive.
type webStream struct {
	frames chan webFrame
	err    error // why reading stopped; read it after frames is closed
	cancel context.CancelFunc
}

func (c *webClient) stream(t testing.TB, method, token string, req proto.Message) *webStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	p, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	resp := c.post(ctx, t, method, token, encodeWebFrame(webData, p))
	s := &webStream{frames: make(chan webFrame, 1024), cancel: cancel}
	go func() {
		defer close(s.frames)
		defer resp.Body.Close()
		for {
			f, err := readWebFrame(resp.Body)
			if err != nil {
				s.err = err
				return
			}
			s.frames <- f
		}
	}()
	t.Cleanup(s.close)
	return s
}

// close cancels the request and waits for the reader to stop.
func (s *webStream) close() {
	s.cancel()
	for range s.frames {
	}
}

// next returns the next frame, failing the test if none comes in time.
func (s *webStream) next(t testing.TB) webFrame {
	t.Helper()
	select {
	case f, ok := <-s.frames:
		if !ok {
			t.Fatalf("stream ended: %v", s.err)
		}
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no grpc-web frame within 10s")
		return webFrame{}
	}
}

// nextResponse returns the next data frame decoded, failing on a trailer
// frame (the stream ending) with its status.
func (s *webStream) nextResponse(t testing.TB) *parleyv1.SubscribeResponse {
	t.Helper()
	f := s.next(t)
	if f.flag == webTrailer {
		tr, _ := parseWebTrailer(f.payload)
		t.Fatalf("stream ended with trailers %q", tr)
	}
	m := &parleyv1.SubscribeResponse{}
	if err := proto.Unmarshal(f.payload, m); err != nil {
		t.Fatalf("decode SubscribeResponse: %v", err)
	}
	return m
}

// TestGRPCWebSubscribe follows a room over grpc-web from after_seq 0 while a
// native client posts, so that the switch from replay to live happens under
// traffic. Under -race it also guards router.Catchup reading the head under
// the conversation's lock.
func TestGRPCWebSubscribe(t *testing.T) {
	n := start(t, "", func(c *Config) { c.Heartbeat = 200 * time.Millisecond })
	alice := register(t, n, "alice")
	bob := register(t, n, "bob")
	conv := room(t, alice, "live", bob)
	c := newWebClient(t, n)

	const before, during = 5, 20
	sent := make(map[string]bool)
	for i := range before {
		cmid := fmt.Sprintf("before-%d", i)
		alice.send(t, conv, cmid, "replayed "+cmid)
		sent[cmid] = true
	}

	// Alice keeps posting over native gRPC while bob's browser subscribes,
	// so that the switch from replay to live happens under traffic.
	sendErr := make(chan error, 1)
	sendCtx := alice.ctx(t)
	go func() {
		for i := range during {
			cmid := fmt.Sprintf("during-%d", i)
			if _, err := alice.chat.Send(sendCtx, &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: cmid, Body: "racing " + cmid}); err != nil {
				sendErr <- fmt.Errorf("Send %s: %w", cmid, err)
				return
			}
		}
		sendErr <- nil
	}()
	for i := range during {
		sent[fmt.Sprintf("during-%d", i)] = true
	}

	s := c.stream(t, parleyv1.ChatService_Subscribe_FullMethodName, bob.token,
		&parleyv1.SubscribeRequest{Conversations: []*parleyv1.SubscribePosition{{ConversationId: conv}}})

	var msgs []*parleyv1.Message
	var subscribed *parleyv1.Subscribed
	heartbeats := 0
	// recv handles one frame; it returns the message in it, if any.
	recv := func() *parleyv1.Message {
		t.Helper()
		r := s.nextResponse(t)
		switch f := r.GetFrame().(type) {
		case *parleyv1.SubscribeResponse_Message:
			m := f.Message
			// What follows Subscribed is live: past the head it announced.
			if subscribed != nil && m.GetSeq() <= subscribed.GetHeadSeq() {
				t.Fatalf("live message seq %d at or below the head %d of Subscribed", m.GetSeq(), subscribed.GetHeadSeq())
			}
			msgs = append(msgs, m)
			return m
		case *parleyv1.SubscribeResponse_Subscribed:
			if subscribed != nil {
				t.Fatalf("second Subscribed: %v", f.Subscribed)
			}
			subscribed = f.Subscribed
		case *parleyv1.SubscribeResponse_Heartbeat:
			if f.Heartbeat.GetServerTime() == nil {
				t.Fatal("Heartbeat without server_time")
			}
			heartbeats++
		case *parleyv1.SubscribeResponse_Presence, *parleyv1.SubscribeResponse_Typing,
			*parleyv1.SubscribeResponse_Receipt, *parleyv1.SubscribeResponse_Notification:
			// Events arrive whenever other users act; this test is about messages.
		default:
			t.Fatalf("unexpected frame %v", r)
		}
		return nil
	}

	for subscribed == nil {
		recv()
	}
	if subscribed.GetConversationId() != conv || subscribed.GetEpoch() != n.Epoch() || subscribed.GetEpochReset() {
		t.Fatalf("Subscribed %v; want conversation %s epoch %s", subscribed, conv, n.Epoch())
	}
	if len(msgs) < before {
		t.Fatalf("%d messages replayed before Subscribed; want at least the %d sent before subscribing", len(msgs), before)
	}
	if last := msgs[len(msgs)-1].GetSeq(); last != subscribed.GetHeadSeq() {
		t.Fatalf("replay ended at seq %d but Subscribed says head_seq %d", last, subscribed.GetHeadSeq())
	}

	select {
	case err := <-sendErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the concurrent sends did not finish within 20s")
	}
	// Sent only now, after Subscribed reached the browser: it can arrive
	// only if the response is streamed frame by frame.
	live := alice.send(t, conv, "live", "after subscribed")
	sent["live"] = true
	for {
		if m := recv(); m != nil && m.GetClientMessageId() == "live" {
			if m.GetSeq() != live.GetSeq() || m.GetBody() != "after subscribed" {
				t.Fatalf("live message %v; want seq %d", m, live.GetSeq())
			}
			break
		}
	}
	// Heartbeats keep coming at the interval, not just once.
	for heartbeats < 3 {
		recv()
	}

	checkOrdered(t, "grpc-web subscriber", msgs)
	got := make(map[string]bool, len(msgs))
	var prev uint64
	for _, m := range msgs {
		got[m.GetClientMessageId()] = true
		if m.GetPrevSeq() != prev {
			t.Errorf("message seq %d has prev_seq %d; the one before it was %d", m.GetSeq(), m.GetPrevSeq(), prev)
		}
		prev = m.GetSeq()
	}
	for cmid := range sent {
		if !got[cmid] {
			t.Errorf("message %s was never delivered", cmid)
		}
	}
	if len(got) != len(sent) {
		t.Errorf("%d distinct messages delivered; %d sent", len(got), len(sent))
	}

	// Closing the browser's request must end the server's stream now, not
	// at shutdown: the goroutine check in TestMain only runs after the node
	// has stopped, which would end the stream anyway.
	s.close()
	waitNoGoroutine(t, "chat.(*Service).Subscribe")
}

// waitNoGoroutine polls until no goroutine's stack mentions fn. Tests that
// use it must not run in parallel with others that could be in fn.
func waitNoGoroutine(t testing.TB, fn string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		for {
			k := runtime.Stack(buf, true)
			if k < len(buf) {
				buf = buf[:k]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		var stuck []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, fn) {
				stuck = append(stuck, g)
			}
		}
		if len(stuck) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still in %s 10s after the client went away:\n%s", len(stuck), fn, strings.Join(stuck, "\n\n"))
		}
		buf = buf[:cap(buf)]
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGRPCWebErrors(t *testing.T) {
	n := start(t, "")
	alice := register(t, n, "alice")
	mallory := register(t, n, "mallory")
	conv := room(t, alice, "errors")
	c := newWebClient(t, n)

	// A failed call may come back trailers-only (status in the headers,
	// empty body) or with a trailer frame; grpc-web clients accept both, and
	// webResult.code reads either.
	ok := &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "m1", Body: "hi"}
	tests := []struct {
		name  string
		token string
		req   *parleyv1.SendRequest
		want  codes.Code
	}{
		{"missing token", "", ok, codes.Unauthenticated},
		{"bad token", "not-a-token", ok, codes.Unauthenticated},
		{"not a member", mallory.token, ok, codes.PermissionDenied},
		{"no such conversation", alice.token, &parleyv1.SendRequest{ConversationId: "room:nowhere", ClientMessageId: "m1", Body: "hi"}, codes.PermissionDenied},
		{"empty body", alice.token, &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "m1"}, codes.InvalidArgument},
		{"blank body", alice.token, &parleyv1.SendRequest{ConversationId: conv, ClientMessageId: "m1", Body: " \n\t"}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := c.call(t, parleyv1.ChatService_Send_FullMethodName, tt.token, tt.req)
			if len(res.data) != 0 {
				t.Errorf("%d data frames with an error", len(res.data))
			}
			if code, msg := res.code(t); code != tt.want {
				t.Errorf("status %v (%q); want %v", code, msg, tt.want)
			} else if msg == "" {
				t.Errorf("status %v without a message", code)
			}
		})
	}

	// None of the failed sends may have stored anything.
	hist := &parleyv1.HistoryResponse{}
	c.unary(t, parleyv1.ChatService_History_FullMethodName, alice.token, &parleyv1.HistoryRequest{ConversationId: conv}, hist)
	if len(hist.GetMessages()) != 0 {
		t.Errorf("History after failed sends: %v", hist.GetMessages())
	}
}

func TestGRPCWebCORS(t *testing.T) {
	const allowed = "http://app.example"
	n := start(t, "", func(c *Config) { c.CORSOrigins = []string{allowed} })
	c := newWebClient(t, n)

	preflight := func(t *testing.T, origin string) *http.Response {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodOptions, c.base+parleyv1.ChatService_Send_FullMethodName, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,x-grpc-web")
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	t.Run("other origin", func(t *testing.T) {
		resp := preflight(t, "http://evil.example")
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("Access-Control-Allow-Origin %q for an origin not in CORSOrigins", got)
		}
		if got := resp.Header.Get("Access-Control-Allow-Methods"); got != "" {
			t.Errorf("Access-Control-Allow-Methods %q for an origin not in CORSOrigins", got)
		}
	})
	t.Run("allowed origin", func(t *testing.T) {
		resp := preflight(t, allowed)
		if resp.StatusCode/100 != 2 {
			t.Errorf("preflight: HTTP %s", resp.Status)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != allowed {
			t.Errorf("Access-Control-Allow-Origin %q; want %q", got, allowed)
		}
		if got := resp.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, "POST") {
			t.Errorf("Access-Control-Allow-Methods %q; want POST", got)
		}
		hdrs := strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers"))
		for _, h := range []string{"authorization", "content-type", "x-grpc-web"} {
			if !strings.Contains(hdrs, h) {
				t.Errorf("Access-Control-Allow-Headers %q lacks %s", hdrs, h)
			}
		}
	})
	// Errors come back trailers-only, with the status in the response
	// headers; a page on another origin can read them only if they are
	// exposed to it.
	t.Run("allowed origin reads an error status", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p, err := proto.Marshal(&parleyv1.SendRequest{ConversationId: "room:x", ClientMessageId: "m1", Body: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+parleyv1.ChatService_Send_FullMethodName, bytes.NewReader(encodeWebFrame(webData, p)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", allowed)
		req.Header.Set("Content-Type", "application/grpc-web+proto")
		req.Header.Set("X-Grpc-Web", "1")
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != allowed {
			t.Errorf("Access-Control-Allow-Origin %q; want %q", got, allowed)
		}
		exposed := strings.ToLower(strings.Join(resp.Header.Values("Access-Control-Expose-Headers"), ","))
		for _, h := range []string{"grpc-status", "grpc-message"} {
			if !strings.Contains(exposed, h) {
				t.Errorf("Access-Control-Expose-Headers %q lacks %s", exposed, h)
			}
		}
		if got := resp.Header.Get("Grpc-Status"); got != strconv.Itoa(int(codes.Unauthenticated)) {
			t.Errorf("grpc-status %q; want %d", got, codes.Unauthenticated)
		}
	})
}

func TestGRPCWebHealthz(t *testing.T) {
	n := start(t, "")
	c := newWebClient(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 1 || resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("GET /healthz: %s %s %q; want HTTP/1.1 200 \"ok\"", resp.Proto, resp.Status, body)
	}
}
