// Package fakeserver is an in-memory Parley server for tests of the Go
// client and the CLI. It keeps the protocol's promises (per-conversation
// seqs, acks, replay then live, dedup of resends, epochs) on a real
// loopback gRPC listener, and has knobs to break them on purpose: kill
// streams with a status, withhold acks or pongs, reject a send, restart on
// the same address, wipe the log into a new epoch, inject raw deliveries,
// corrupt downloads. It also carries receipts, typing, presence (with no
// grace period and no typing expiry), notifications, edits and deletes,
// and attachments, and records the receipt and typing frames it gets.
// It is not a reference for the real server: storage is a slice and every
// ack is immediate.
package fakeserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// queueSize bounds each stream's outbound queue; a stream that falls this
// far behind is cut as a slow consumer, as the real server does.
const queueSize = 4096

// Server is the fake. All its methods are safe for concurrent use.
type Server struct {
	parleyv1.UnimplementedAuthServiceServer
	parleyv1.UnimplementedChatServiceServer
	parleyv1.UnimplementedConversationServiceServer
	parleyv1.UnimplementedAttachmentServiceServer

	addr string

	mu         sync.Mutex // protects everything below
	srv        *grpc.Server
	serveDone  chan struct{}
	users      map[string]string // username → password
	tokens     map[string]string // token → username
	convs      map[string]*conversation
	epoch      string
	acks       map[string]*parleyv1.SendResponse // sender + "\x00" + client_message_id → first ack
	streams    map[*stream]struct{}
	subscribes []*parleyv1.SubscribePosition
	sends      []*parleyv1.SendRequest
	opened     int
	dropAcks   bool
	dropPongs  bool
	rejects    map[string]*reject // by body
	stopped    bool
	receipts   map[string]map[string]*parleyv1.Receipt // conversation → user → positions
	signals    []*parleyv1.ChatRequest                 // delivered, read and typing frames, in order
	blobs      map[string]*blob                        // by id
	corrupt    bool                                    // flip a byte of every download
}

// blob is an uploaded file.
type blob struct {
	data              []byte
	name, contentType string
}

// reject answers sends of one body with an ErrorFrame.
type reject struct {
	code  codes.Code
	times int // how many more sends to answer so; < 0 for all
}

type conversation struct {
	info    *parleyv1.Conversation // id, kind, title, owner, created_at
	members map[string]bool
	msgs    []*parleyv1.Message
	last    uint64 // last seq assigned
	active  time.Time
}

// stream is one open Chat stream.
type stream struct {
	user string
	out  chan *parleyv1.ChatResponse
	kill chan error      // buffered 1: the first reason wins
	subs map[string]bool // guarded by Server.mu
}

var (
	_ parleyv1.AuthServiceServer         = (*Server)(nil)
	_ parleyv1.ChatServiceServer         = (*Server)(nil)
	_ parleyv1.ConversationServiceServer = (*Server)(nil)
	_ parleyv1.AttachmentServiceServer   = (*Server)(nil)
)

// New starts a fake server on a loopback port and stops it when the test
// ends.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		users:    make(map[string]string),
		tokens:   make(map[string]string),
		convs:    make(map[string]*conversation),
		epoch:    randomID(),
		acks:     make(map[string]*parleyv1.SendResponse),
		streams:  make(map[*stream]struct{}),
		rejects:  make(map[string]*reject),
		receipts: make(map[string]map[string]*parleyv1.Receipt),
		blobs:    make(map[string]*blob),
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fakeserver: listen: %v", err)
	}
	s.addr = lis.Addr().String()
	s.mu.Lock()
	s.serveLocked(lis)
	s.mu.Unlock()
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's "host:port"; it stays the same across Restart.
func (s *Server) Addr() string { return s.addr }

// serveLocked starts a gRPC server on lis. s.mu must be held.
func (s *Server) serveLocked(lis net.Listener) {
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.unaryAuth),
		grpc.ChainStreamInterceptor(s.streamAuth),
	)
	parleyv1.RegisterAuthServiceServer(srv, s)
	parleyv1.RegisterChatServiceServer(srv, s)
	parleyv1.RegisterConversationServiceServer(srv, s)
	parleyv1.RegisterAttachmentServiceServer(srv, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	s.srv, s.serveDone = srv, done
}

// Stop stops the server for good, cutting every connection.
func (s *Server) Stop() {
	s.mu.Lock()
	srv, done := s.srv, s.serveDone
	s.srv, s.stopped = nil, true
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
		<-done
	}
}

// Restart cuts every connection the way a crashing server does, then serves
// again on the same address with the same state. down, if not nil, runs
// while nothing listens.
func (s *Server) Restart(down func()) error {
	s.mu.Lock()
	srv, done := s.srv, s.serveDone
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
		<-done
	}
	if down != nil {
		down()
	}
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("fakeserver: listen again on %s: %w", s.addr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		lis.Close()
		return errors.New("fakeserver: stopped")
	}
	s.serveLocked(lis)
	return nil
}

// AddUser creates a user (if new) and returns a fresh token for it.
func (s *Server) AddUser(name, password string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[name]; !ok {
		s.users[name] = password
	}
	return s.issueLocked(name)
}

func (s *Server) issueLocked(user string) string {
	tok := "tok-" + user + "-" + randomID()
	s.tokens[tok] = user
	return tok
}

// Revoke makes every token of user fail with UNAUTHENTICATED from the next
// call or stream on. Open streams are not touched.
func (s *Server) Revoke(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok, u := range s.tokens {
		if u == user {
			delete(s.tokens, tok)
		}
	}
}

// AddConversation creates a conversation directly; kind decides nothing in
// the fake beyond what is reported. It is for tests that need one without
// the RPCs.
func (s *Server) AddConversation(id string, kind parleyv1.ConversationKind, members ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addConvLocked(&parleyv1.Conversation{Id: id, Kind: kind}, members...)
}

func (s *Server) addConvLocked(info *parleyv1.Conversation, members ...string) *conversation {
	info.CreatedAt = timestamppb.Now()
	c := &conversation{info: info, members: make(map[string]bool), active: time.Now()}
	for _, m := range members {
		c.members[m] = true
	}
	s.convs[info.Id] = c
	return c
}

// KillStreams ends every open Chat stream with the given status, as the
// real server does for a slow consumer (RESOURCE_EXHAUSTED) or on shutdown
// (UNAVAILABLE).
func (s *Server) KillStreams(code codes.Code, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.streams {
		st.cut(status.Error(code, msg))
	}
}

// DropAcks makes the server store and deliver sends but not acknowledge
// them, as when it crashes between the commit and the ack.
func (s *Server) DropAcks(drop bool) {
	s.mu.Lock()
	s.dropAcks = drop
	s.mu.Unlock()
}

// DropPongs makes the server ignore pings.
func (s *Server) DropPongs(drop bool) {
	s.mu.Lock()
	s.dropPongs = drop
	s.mu.Unlock()
}

// Reject makes the next times Chat sends with this body (every one if
// times <= 0) fail with an ErrorFrame of the given code instead of being
// stored.
func (s *Server) Reject(body string, code codes.Code, times int) {
	if times <= 0 {
		times = -1
	}
	s.mu.Lock()
	s.rejects[body] = &reject{code: code, times: times}
	s.mu.Unlock()
}

// Wipe replaces the log with an empty one under a new epoch, as when a
// server's data is lost or restored from elsewhere.
func (s *Server) Wipe() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch = randomID()
	clear(s.acks)
	for _, c := range s.convs {
		c.msgs, c.last = nil, 0
	}
}

// Epoch returns the current log epoch.
func (s *Server) Epoch() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// Publish posts a message as sender, as if sent through the API, and
// returns it as stored.
func (s *Server) Publish(sender, conv, body string) (*parleyv1.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ack, err := s.publishLocked(sender, &parleyv1.SendRequest{
		ConversationId: conv, ClientMessageId: randomID(), Body: body,
	})
	if err != nil {
		return nil, err
	}
	c := s.convs[conv]
	for _, m := range c.msgs {
		if m.Seq == ack.Seq {
			return m, nil
		}
	}
	return nil, errors.New("fakeserver: published message not found")
}

// Inject delivers m as it is to every stream subscribed to its
// conversation, without storing it: a way to produce deliveries the real
// server should not, such as duplicates.
func (s *Server) Inject(m *parleyv1.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fanOutLocked(m)
}

// Redeliver stores the message at seq again under the next seq, with the
// same sender and client_message_id, and delivers it: what happens when a
// crash lost the commit of a message that was already delivered and its
// sender's outbox resent it.
func (s *Server) Redeliver(conv string, seq uint64) (*parleyv1.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.convs[conv]
	if !ok {
		return nil, fmt.Errorf("fakeserver: no conversation %q", conv)
	}
	for _, m := range c.msgs {
		if m.Seq == seq {
			again := proto.CloneOf(m)
			again.PrevSeq, again.Seq = c.last, c.last+1
			c.last++
			c.msgs = append(c.msgs, again)
			s.fanOutLocked(again)
			return again, nil
		}
	}
	return nil, fmt.Errorf("fakeserver: no seq %d in %q", seq, conv)
}

// Subscribes returns every subscribe frame received on any Chat stream, in
// order.
func (s *Server) Subscribes() []*parleyv1.SubscribePosition {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.subscribes)
}

// Sends returns every send frame received on any Chat stream, in order,
// resends included.
func (s *Server) Sends() []*parleyv1.SendRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sends)
}

// Messages returns the stored messages of a conversation.
func (s *Server) Messages(conv string) []*parleyv1.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.convs[conv]; ok {
		return slices.Clone(c.msgs)
	}
	return nil
}

// StreamsOpened counts the Chat streams ever accepted.
func (s *Server) StreamsOpened() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened
}

// ActiveStreams counts the Chat streams open now.
func (s *Server) ActiveStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// cut ends the stream with err unless it already has a reason.
func (st *stream) cut(err error) {
	select {
	case st.kill <- err:
	default:
	}
}

// push queues a frame for the stream's writer, cutting a slow consumer
// rather than waiting for it. Server.mu must be held.
func (st *stream) push(resp *parleyv1.ChatResponse) {
	select {
	case st.out <- resp:
	default:
		st.cut(status.Error(codes.ResourceExhausted, "slow consumer"))
	}
}

// --- auth ---

type userKey struct{}

func (s *Server) authenticate(ctx context.Context, method string) (context.Context, error) {
	if strings.HasPrefix(method, "/parley.v1.AuthService/") {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 || !strings.HasPrefix(vals[0], "Bearer ") {
		return nil, status.Error(codes.Unauthenticated, "missing bearer token")
	}
	s.mu.Lock()
	user, ok := s.tokens[strings.TrimPrefix(vals[0], "Bearer ")]
	s.mu.Unlock()
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "invalid or expired token")
	}
	return context.WithValue(ctx, userKey{}, user), nil
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := s.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a authedStream) Context() context.Context { return a.ctx }

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := s.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, authedStream{ss, ctx})
}

func userOf(ctx context.Context) string {
	u, _ := ctx.Value(userKey{}).(string)
	return u
}

// Register implements AuthService.
func (s *Server) Register(_ context.Context, req *parleyv1.RegisterRequest) (*parleyv1.RegisterResponse, error) {
	if req.GetUsername() == "" || len(req.GetPassword()) < 8 {
		return nil, status.Error(codes.InvalidArgument, "username required and password of at least 8 bytes")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[req.GetUsername()]; ok {
		return nil, status.Error(codes.AlreadyExists, "username taken")
	}
	s.users[req.GetUsername()] = req.GetPassword()
	return &parleyv1.RegisterResponse{UserId: req.GetUsername(), Token: s.tokenLocked(req.GetUsername())}, nil
}

// Login implements AuthService.
func (s *Server) Login(_ context.Context, req *parleyv1.LoginRequest) (*parleyv1.LoginResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pw, ok := s.users[req.GetUsername()]; !ok || pw != req.GetPassword() {
		return nil, status.Error(codes.Unauthenticated, "wrong username or password")
	}
	return &parleyv1.LoginResponse{UserId: req.GetUsername(), Token: s.tokenLocked(req.GetUsername())}, nil
}

func (s *Server) tokenLocked(user string) *parleyv1.AccessToken {
	return &parleyv1.AccessToken{
		Value:     s.issueLocked(user),
		ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
	}
}

// --- chat ---

// Chat implements ChatService: a reader goroutine handles frames, this
// goroutine is the stream's only writer.
func (s *Server) Chat(ss grpc.BidiStreamingServer[parleyv1.ChatRequest, parleyv1.ChatResponse]) error {
	st := &stream{
		user: userOf(ss.Context()),
		out:  make(chan *parleyv1.ChatResponse, queueSize),
		kill: make(chan error, 1),
		subs: make(map[string]bool),
	}
	s.mu.Lock()
	first := s.streamsOfLocked(st.user) == 0
	s.streams[st] = struct{}{}
	s.opened++
	if first {
		s.announceLocked(&parleyv1.Presence{UserId: st.user, Online: true})
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		if s.streamsOfLocked(st.user) == 0 {
			s.announceLocked(&parleyv1.Presence{UserId: st.user, LastSeen: timestamppb.Now()})
		}
		s.mu.Unlock()
	}()

	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := ss.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			s.handleFrame(st, req)
		}
	}()
	for {
		select {
		case resp := <-st.out:
			if err := ss.Send(resp); err != nil {
				return err
			}
		case err := <-st.kill:
			return err
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-ss.Context().Done():
			return ss.Context().Err()
		}
	}
}

func (s *Server) handleFrame(st *stream, req *parleyv1.ChatRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(frame string, code codes.Code, msg, conv, cmid string) {
		st.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Error{Error: &parleyv1.ErrorFrame{
			FrameId: req.GetFrameId(), Frame: frame, Code: uint32(code), Message: msg,
			ConversationId: conv, ClientMessageId: cmid,
		}}})
	}
	switch f := req.GetFrame().(type) {
	case *parleyv1.ChatRequest_Send:
		s.sends = append(s.sends, proto.CloneOf(f.Send))
		if r, ok := s.rejects[f.Send.GetBody()]; ok && r.times != 0 {
			r.times--
			fail("send", r.code, "rejected by test", f.Send.GetConversationId(), f.Send.GetClientMessageId())
			return
		}
		ack, err := s.publishLocked(st.user, f.Send)
		if err != nil {
			sc := status.Convert(err)
			fail("send", sc.Code(), sc.Message(), f.Send.GetConversationId(), f.Send.GetClientMessageId())
			return
		}
		if !s.dropAcks {
			st.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_SendAck{SendAck: ack}})
		}
	case *parleyv1.ChatRequest_Subscribe:
		pos := f.Subscribe
		s.subscribes = append(s.subscribes, proto.CloneOf(pos))
		c, ok := s.convs[pos.GetConversationId()]
		if !ok || !c.members[st.user] {
			fail("subscribe", codes.PermissionDenied, "not a member", pos.GetConversationId(), "")
			return
		}
		// Replay and the switch to live happen under s.mu, so no live
		// message can slip between them.
		st.subs[c.info.Id] = true
		after, reset := pos.GetAfterSeq(), false
		if pos.GetEpoch() != "" && pos.GetEpoch() != s.epoch {
			after, reset = 0, true
		}
		for _, m := range c.msgs {
			if m.Seq > after {
				st.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Message{Message: m}})
			}
		}
		st.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Subscribed{Subscribed: &parleyv1.Subscribed{
			ConversationId: c.info.Id, HeadSeq: c.last, Epoch: s.epoch, EpochReset: reset,
		}}})
	case *parleyv1.ChatRequest_Unsubscribe:
		delete(st.subs, f.Unsubscribe.GetConversationId())
	case *parleyv1.ChatRequest_Ping:
		if !s.dropPongs {
			st.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Pong{Pong: &parleyv1.Pong{
				Nonce: f.Ping.GetNonce(), ServerTime: timestamppb.Now(),
			}}})
		}
	case *parleyv1.ChatRequest_Delivered:
		s.signals = append(s.signals, proto.CloneOf(req))
		if _, err := s.receiptLocked(st.user, f.Delivered.GetConversationId(), f.Delivered.GetSeq(), 0); err != nil {
			sc := status.Convert(err)
			fail("delivered", sc.Code(), sc.Message(), f.Delivered.GetConversationId(), "")
		}
	case *parleyv1.ChatRequest_Read:
		s.signals = append(s.signals, proto.CloneOf(req))
		if _, err := s.receiptLocked(st.user, f.Read.GetConversationId(), 0, f.Read.GetSeq()); err != nil {
			sc := status.Convert(err)
			fail("read", sc.Code(), sc.Message(), f.Read.GetConversationId(), "")
		}
	case *parleyv1.ChatRequest_Typing:
		s.signals = append(s.signals, proto.CloneOf(req))
		if err := s.typingLocked(st.user, f.Typing.GetConversationId(), f.Typing.GetTyping()); err != nil {
			sc := status.Convert(err)
			fail("typing", sc.Code(), sc.Message(), f.Typing.GetConversationId(), "")
		}
	case *parleyv1.ChatRequest_Edit:
		e := f.Edit
		s.sends = append(s.sends, &parleyv1.SendRequest{ConversationId: e.GetConversationId(), ClientMessageId: e.GetClientMessageId(), Body: e.GetBody()})
		ack, err := s.changeLocked(st.user, e.GetConversationId(), e.GetSeq(), e.GetClientMessageId(), e.GetBody(), parleyv1.MessageKind_MESSAGE_KIND_EDIT)
		if err != nil {
			sc := status.Convert(err)
			fail("edit", sc.Code(), sc.Message(), e.GetConversationId(), e.GetClientMessageId())
			return
		}
		if !s.dropAcks {
			st.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_SendAck{SendAck: ack}})
		}
	case *parleyv1.ChatRequest_Delete:
		d := f.Delete
		s.sends = append(s.sends, &parleyv1.SendRequest{ConversationId: d.GetConversationId(), ClientMessageId: d.GetClientMessageId()})
		ack, err := s.changeLocked(st.user, d.GetConversationId(), d.GetSeq(), d.GetClientMessageId(), "", parleyv1.MessageKind_MESSAGE_KIND_DELETE)
		if err != nil {
			sc := status.Convert(err)
			fail("delete", sc.Code(), sc.Message(), d.GetConversationId(), d.GetClientMessageId())
			return
		}
		if !s.dropAcks {
			st.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_SendAck{SendAck: ack}})
		}
	default:
		fail("unknown", codes.InvalidArgument, "empty frame", "", "")
	}
}

// publishLocked stores and fans out a message, or returns the original
// ack of a resend. s.mu must be held.
func (s *Server) publishLocked(sender string, req *parleyv1.SendRequest) (*parleyv1.SendResponse, error) {
	if req.GetBody() == "" && len(req.GetAttachments()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "empty body")
	}
	if id := req.GetClientMessageId(); id == "" || len(id) > 64 {
		return nil, status.Error(codes.InvalidArgument, "client_message_id must be 1 to 64 characters")
	}
	c, ok := s.convs[req.GetConversationId()]
	if !ok || !c.members[sender] {
		return nil, status.Error(codes.PermissionDenied, "not a member of this conversation")
	}
	if ack, ok := s.ackedLocked(sender, req.GetClientMessageId()); ok {
		return ack, nil
	}
	var atts []*parleyv1.Attachment
	for _, a := range req.GetAttachments() {
		b, ok := s.blobs[a.GetId()]
		if !ok {
			return nil, status.Errorf(codes.PermissionDenied, "no attachment %q of yours", a.GetId())
		}
		atts = append(atts, &parleyv1.Attachment{Id: a.GetId(), Name: a.GetName(), ContentType: a.GetContentType(), Size: uint64(len(b.data))})
	}
	return s.storeLocked(c, &parleyv1.Message{
		SenderId:        sender,
		ClientMessageId: req.GetClientMessageId(),
		Body:            req.GetBody(),
		Attachments:     atts,
	}), nil
}

// ackedLocked returns the original ack, marked duplicate, of a
// (sender, client_message_id) already stored. s.mu must be held.
func (s *Server) ackedLocked(sender, clientMessageID string) (*parleyv1.SendResponse, bool) {
	ack, ok := s.acks[sender+"\x00"+clientMessageID]
	if !ok {
		return nil, false
	}
	dup := proto.CloneOf(ack)
	dup.Duplicate = true
	return dup, true
}

// storeLocked sequences m in c, delivers it and returns its ack. s.mu must
// be held.
func (s *Server) storeLocked(c *conversation, m *parleyv1.Message) *parleyv1.SendResponse {
	m.ConversationId = c.info.Id
	m.PrevSeq = c.last
	c.last++
	m.Seq = c.last
	m.SentAt = timestamppb.Now()
	c.msgs = append(c.msgs, m)
	c.active = time.Now()
	s.fanOutLocked(m)
	if m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_UNSPECIFIED {
		s.notifyLocked(c, m)
	}
	ack := &parleyv1.SendResponse{
		ConversationId:  m.ConversationId,
		ClientMessageId: m.ClientMessageId,
		Seq:             m.Seq,
		SentAt:          m.SentAt,
	}
	s.acks[m.SenderId+"\x00"+m.ClientMessageId] = ack
	return ack
}

// changeLocked stores an edit or delete of the post at seq, and changes the
// stored post the way History shows it. s.mu must be held.
func (s *Server) changeLocked(sender, conv string, seq uint64, cmid, body string, kind parleyv1.MessageKind) (*parleyv1.SendResponse, error) {
	if cmid == "" || len(cmid) > 64 {
		return nil, status.Error(codes.InvalidArgument, "client_message_id must be 1 to 64 characters")
	}
	if kind == parleyv1.MessageKind_MESSAGE_KIND_EDIT && body == "" {
		return nil, status.Error(codes.InvalidArgument, "empty body")
	}
	c, ok := s.convs[conv]
	if !ok || !c.members[sender] {
		return nil, status.Error(codes.PermissionDenied, "not a member of this conversation")
	}
	if ack, ok := s.ackedLocked(sender, cmid); ok {
		return ack, nil
	}
	i := slices.IndexFunc(c.msgs, func(m *parleyv1.Message) bool { return m.GetSeq() == seq })
	if i < 0 {
		return nil, status.Errorf(codes.NotFound, "no stored message at seq %d", seq)
	}
	post := c.msgs[i]
	switch {
	case post.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_UNSPECIFIED && post.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_POST:
		return nil, status.Errorf(codes.FailedPrecondition, "seq %d is not a post", seq)
	case post.GetSenderId() != sender:
		return nil, status.Errorf(codes.PermissionDenied, "seq %d is %s's", seq, post.GetSenderId())
	case post.GetDeleted():
		return nil, status.Errorf(codes.FailedPrecondition, "seq %d was deleted", seq)
	}
	ack := s.storeLocked(c, &parleyv1.Message{SenderId: sender, ClientMessageId: cmid, Body: body, Kind: kind, TargetSeq: seq})
	// Streams may still hold the old post: change a copy.
	changed := proto.CloneOf(post)
	if kind == parleyv1.MessageKind_MESSAGE_KIND_EDIT {
		changed.Body, changed.EditedAt = body, ack.GetSentAt()
	} else {
		changed.Body, changed.Attachments, changed.Deleted = "", nil, true
	}
	c.msgs[i] = changed
	return ack, nil
}

func (s *Server) fanOutLocked(m *parleyv1.Message) {
	s.broadcastLocked(m.GetConversationId(), &parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Message{Message: m}})
}

// broadcastLocked pushes a frame to every stream following conv. s.mu must
// be held.
func (s *Server) broadcastLocked(conv string, resp *parleyv1.ChatResponse) {
	for st := range s.streams {
		if st.subs[conv] {
			st.push(resp)
		}
	}
}

// notifyLocked tells the other members' streams that do not follow c about
// a new post. s.mu must be held.
func (s *Server) notifyLocked(c *conversation, m *parleyv1.Message) {
	preview := []rune(m.GetBody())
	if len(preview) > 100 {
		preview = preview[:100]
	}
	for st := range s.streams {
		if st.user == m.GetSenderId() || !c.members[st.user] || st.subs[c.info.Id] {
			continue
		}
		st.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Notification{Notification: &parleyv1.Notification{
			ConversationId: c.info.Id, Seq: m.GetSeq(), SenderId: m.GetSenderId(), Preview: string(preview), SentAt: m.GetSentAt(),
		}}})
	}
}

func (s *Server) streamsOfLocked(user string) int {
	n := 0
	for st := range s.streams {
		if st.user == user {
			n++
		}
	}
	return n
}

// peersLocked reports whether a and b share a conversation (a user is
// their own peer). s.mu must be held.
func (s *Server) peersLocked(a, b string) bool {
	if a == b {
		return true
	}
	for _, c := range s.convs {
		if c.members[a] && c.members[b] {
			return true
		}
	}
	return false
}

// announceLocked tells every stream of p's user's peers about p. s.mu must
// be held.
func (s *Server) announceLocked(p *parleyv1.Presence) {
	for st := range s.streams {
		if s.peersLocked(st.user, p.GetUserId()) {
			st.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Presence{Presence: p}})
		}
	}
}

// receiptLocked moves user's positions in conv forward and tells the
// conversation's subscribers. s.mu must be held.
func (s *Server) receiptLocked(user, conv string, delivered, read uint64) (*parleyv1.Receipt, error) {
	c, ok := s.convs[conv]
	if !ok || !c.members[user] {
		return nil, status.Error(codes.PermissionDenied, "not a member of this conversation")
	}
	if seq := max(delivered, read); seq > c.last {
		return nil, status.Errorf(codes.InvalidArgument, "seq %d is past the conversation's newest message (%d)", seq, c.last)
	}
	byUser := s.receipts[conv]
	if byUser == nil {
		byUser = make(map[string]*parleyv1.Receipt)
		s.receipts[conv] = byUser
	}
	r := byUser[user]
	if r == nil {
		r = &parleyv1.Receipt{ConversationId: conv, UserId: user}
	} else {
		r = proto.CloneOf(r)
	}
	r.ReadSeq = max(r.ReadSeq, read)
	r.DeliveredSeq = max(r.DeliveredSeq, delivered, read)
	r.UpdatedAt = timestamppb.Now()
	byUser[user] = r
	s.broadcastLocked(conv, &parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Receipt{Receipt: r}})
	return r, nil
}

// typingLocked tells conv's subscribers that user is (not) typing. s.mu
// must be held.
func (s *Server) typingLocked(user, conv string, on bool) error {
	c, ok := s.convs[conv]
	if !ok || !c.members[user] {
		return status.Error(codes.PermissionDenied, "not a member of this conversation")
	}
	t := &parleyv1.Typing{ConversationId: conv, UserId: user, Typing: on}
	if on {
		t.ExpiresAt = timestamppb.New(time.Now().Add(6 * time.Second))
	}
	s.broadcastLocked(conv, &parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Typing{Typing: t}})
	return nil
}

// Send implements ChatService's unary Send.
func (s *Server) Send(ctx context.Context, req *parleyv1.SendRequest) (*parleyv1.SendResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.publishLocked(userOf(ctx), req)
}

// History implements ChatService.
func (s *Server) History(ctx context.Context, req *parleyv1.HistoryRequest) (*parleyv1.HistoryResponse, error) {
	if req.GetLimit() < 0 || req.GetLimit() > 500 {
		return nil, status.Error(codes.InvalidArgument, "limit must be 0 to 500")
	}
	if (req.GetAfterSeq() != 0 || req.GetForward()) && req.GetBeforeSeq() != 0 {
		return nil, status.Error(codes.InvalidArgument, "set at most one of after_seq (or forward) and before_seq")
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = 50
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.memberConvLocked(ctx, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	var page []*parleyv1.Message
	more := false
	switch {
	case req.GetAfterSeq() != 0 || req.GetForward():
		for _, m := range c.msgs {
			if m.Seq > req.GetAfterSeq() {
				if len(page) == limit {
					more = true
					break
				}
				page = append(page, m)
			}
		}
	default:
		before := req.GetBeforeSeq()
		var older []*parleyv1.Message
		for _, m := range c.msgs {
			if before == 0 || m.Seq < before {
				older = append(older, m)
			}
		}
		if len(older) > limit {
			more = true
			older = older[len(older)-limit:]
		}
		page = older
	}
	return &parleyv1.HistoryResponse{Messages: page, HasMore: more, HeadSeq: c.last, Epoch: s.epoch}, nil
}

// --- conversations ---

func (s *Server) memberConvLocked(ctx context.Context, id string) (*conversation, error) {
	c, ok := s.convs[id]
	if !ok || !c.members[userOf(ctx)] {
		return nil, status.Error(codes.PermissionDenied, "not a member of this conversation")
	}
	return c, nil
}

// viewLocked is c as user sees it, with their read position and unread
// count. s.mu must be held.
func (s *Server) viewLocked(c *conversation, user string) *parleyv1.Conversation {
	v := c.view()
	v.ReadSeq = s.receipts[c.info.Id][user].GetReadSeq()
	for _, m := range c.msgs {
		if m.GetSeq() > v.ReadSeq && m.GetSenderId() != user && m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_UNSPECIFIED && !m.GetDeleted() {
			v.UnreadCount++
		}
	}
	return v
}

func (c *conversation) view() *parleyv1.Conversation {
	v := proto.CloneOf(c.info)
	for m := range c.members {
		v.MemberIds = append(v.MemberIds, m)
	}
	sort.Strings(v.MemberIds)
	v.HeadSeq = c.last
	if n := len(c.msgs); n > 0 {
		v.LastMessage = c.msgs[n-1]
	}
	return v
}

// CreateDirect implements ConversationService.
func (s *Server) CreateDirect(ctx context.Context, req *parleyv1.CreateDirectRequest) (*parleyv1.CreateDirectResponse, error) {
	me, other := userOf(ctx), req.GetUserId()
	if me == other {
		return nil, status.Error(codes.InvalidArgument, "cannot open a direct conversation with yourself")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[other]; !ok {
		return nil, status.Errorf(codes.NotFound, "no user %q", other)
	}
	pair := []string{me, other}
	sort.Strings(pair)
	id := "dm:" + pair[0] + ":" + pair[1]
	c, ok := s.convs[id]
	if !ok {
		c = s.addConvLocked(&parleyv1.Conversation{Id: id, Kind: parleyv1.ConversationKind_CONVERSATION_KIND_DIRECT}, me, other)
	}
	return &parleyv1.CreateDirectResponse{Conversation: s.viewLocked(c, userOf(ctx))}, nil
}

// CreateRoom implements ConversationService.
func (s *Server) CreateRoom(ctx context.Context, req *parleyv1.CreateRoomRequest) (*parleyv1.CreateRoomResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "room name required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := "room:" + req.GetName()
	if _, ok := s.convs[id]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "room %q exists", req.GetName())
	}
	title := req.GetTitle()
	if title == "" {
		title = req.GetName()
	}
	c := s.addConvLocked(&parleyv1.Conversation{
		Id: id, Kind: parleyv1.ConversationKind_CONVERSATION_KIND_ROOM, Title: title, OwnerId: userOf(ctx),
	}, userOf(ctx))
	return &parleyv1.CreateRoomResponse{Conversation: s.viewLocked(c, userOf(ctx))}, nil
}

// JoinRoom implements ConversationService.
func (s *Server) JoinRoom(ctx context.Context, req *parleyv1.JoinRoomRequest) (*parleyv1.JoinRoomResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.convs[req.GetConversationId()]
	if !ok || c.info.Kind != parleyv1.ConversationKind_CONVERSATION_KIND_ROOM {
		return nil, status.Errorf(codes.NotFound, "no room %q", req.GetConversationId())
	}
	c.members[userOf(ctx)] = true
	return &parleyv1.JoinRoomResponse{Conversation: s.viewLocked(c, userOf(ctx))}, nil
}

// CreateGroup implements ConversationService.
func (s *Server) CreateGroup(ctx context.Context, req *parleyv1.CreateGroupRequest) (*parleyv1.CreateGroupResponse, error) {
	if req.GetTitle() == "" {
		return nil, status.Error(codes.InvalidArgument, "group title required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range req.GetMemberIds() {
		if _, ok := s.users[m]; !ok {
			return nil, status.Errorf(codes.NotFound, "no user %q", m)
		}
	}
	c := s.addConvLocked(&parleyv1.Conversation{
		Id: "group:" + randomID()[:12], Kind: parleyv1.ConversationKind_CONVERSATION_KIND_GROUP,
		Title: req.GetTitle(), OwnerId: userOf(ctx),
	}, append([]string{userOf(ctx)}, req.GetMemberIds()...)...)
	return &parleyv1.CreateGroupResponse{Conversation: s.viewLocked(c, userOf(ctx))}, nil
}

func (s *Server) ownedGroupLocked(ctx context.Context, id string) (*conversation, error) {
	c, err := s.memberConvLocked(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.info.Kind != parleyv1.ConversationKind_CONVERSATION_KIND_GROUP {
		return nil, status.Error(codes.FailedPrecondition, "only groups have managed members")
	}
	if c.info.OwnerId != userOf(ctx) {
		return nil, status.Error(codes.PermissionDenied, "only the owner manages members")
	}
	return c, nil
}

// AddMember implements ConversationService.
func (s *Server) AddMember(ctx context.Context, req *parleyv1.AddMemberRequest) (*parleyv1.AddMemberResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.ownedGroupLocked(ctx, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	if _, ok := s.users[req.GetUserId()]; !ok {
		return nil, status.Errorf(codes.NotFound, "no user %q", req.GetUserId())
	}
	c.members[req.GetUserId()] = true
	return &parleyv1.AddMemberResponse{Conversation: s.viewLocked(c, userOf(ctx))}, nil
}

// RemoveMember implements ConversationService.
func (s *Server) RemoveMember(ctx context.Context, req *parleyv1.RemoveMemberRequest) (*parleyv1.RemoveMemberResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.ownedGroupLocked(ctx, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	if req.GetUserId() == userOf(ctx) {
		return nil, status.Error(codes.FailedPrecondition, "the owner leaves instead")
	}
	delete(c.members, req.GetUserId())
	return &parleyv1.RemoveMemberResponse{Conversation: s.viewLocked(c, userOf(ctx))}, nil
}

// LeaveConversation implements ConversationService.
func (s *Server) LeaveConversation(ctx context.Context, req *parleyv1.LeaveConversationRequest) (*parleyv1.LeaveConversationResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.memberConvLocked(ctx, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	if c.info.Kind == parleyv1.ConversationKind_CONVERSATION_KIND_DIRECT {
		return nil, status.Error(codes.FailedPrecondition, "direct conversations cannot be left")
	}
	delete(c.members, userOf(ctx))
	return &parleyv1.LeaveConversationResponse{}, nil
}

// GetConversation implements ConversationService.
func (s *Server) GetConversation(ctx context.Context, req *parleyv1.GetConversationRequest) (*parleyv1.GetConversationResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.memberConvLocked(ctx, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	return &parleyv1.GetConversationResponse{Conversation: s.viewLocked(c, userOf(ctx))}, nil
}

// ListConversations implements ConversationService.
func (s *Server) ListConversations(ctx context.Context, _ *parleyv1.ListConversationsRequest) (*parleyv1.ListConversationsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var mine []*conversation
	for _, c := range s.convs {
		if c.members[userOf(ctx)] {
			mine = append(mine, c)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].active.After(mine[j].active) })
	resp := &parleyv1.ListConversationsResponse{}
	for _, c := range mine {
		resp.Conversations = append(resp.Conversations, s.viewLocked(c, userOf(ctx)))
	}
	return resp, nil
}

// --- receipts, typing, presence, edits ---

// MarkDelivered implements ChatService.
func (s *Server) MarkDelivered(ctx context.Context, req *parleyv1.MarkDeliveredRequest) (*parleyv1.MarkDeliveredResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.receiptLocked(userOf(ctx), req.GetConversationId(), req.GetSeq(), 0)
	if err != nil {
		return nil, err
	}
	return &parleyv1.MarkDeliveredResponse{Receipt: r}, nil
}

// MarkRead implements ChatService.
func (s *Server) MarkRead(ctx context.Context, req *parleyv1.MarkReadRequest) (*parleyv1.MarkReadResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.receiptLocked(userOf(ctx), req.GetConversationId(), 0, req.GetSeq())
	if err != nil {
		return nil, err
	}
	return &parleyv1.MarkReadResponse{Receipt: r}, nil
}

// GetReceipts implements ChatService.
func (s *Server) GetReceipts(ctx context.Context, req *parleyv1.GetReceiptsRequest) (*parleyv1.GetReceiptsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.memberConvLocked(ctx, req.GetConversationId()); err != nil {
		return nil, err
	}
	resp := &parleyv1.GetReceiptsResponse{}
	for _, r := range s.receipts[req.GetConversationId()] {
		resp.Receipts = append(resp.Receipts, r)
	}
	slices.SortFunc(resp.Receipts, func(a, b *parleyv1.Receipt) int { return strings.Compare(a.GetUserId(), b.GetUserId()) })
	return resp, nil
}

// SetTyping implements ChatService.
func (s *Server) SetTyping(ctx context.Context, req *parleyv1.SetTypingRequest) (*parleyv1.SetTypingResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.typingLocked(userOf(ctx), req.GetConversationId(), req.GetTyping()); err != nil {
		return nil, err
	}
	return &parleyv1.SetTypingResponse{}, nil
}

// EditMessage implements ChatService.
func (s *Server) EditMessage(ctx context.Context, req *parleyv1.EditMessageRequest) (*parleyv1.EditMessageResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ack, err := s.changeLocked(userOf(ctx), req.GetConversationId(), req.GetSeq(), req.GetClientMessageId(), req.GetBody(), parleyv1.MessageKind_MESSAGE_KIND_EDIT)
	if err != nil {
		return nil, err
	}
	return &parleyv1.EditMessageResponse{Ack: ack}, nil
}

// DeleteMessage implements ChatService.
func (s *Server) DeleteMessage(ctx context.Context, req *parleyv1.DeleteMessageRequest) (*parleyv1.DeleteMessageResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ack, err := s.changeLocked(userOf(ctx), req.GetConversationId(), req.GetSeq(), req.GetClientMessageId(), "", parleyv1.MessageKind_MESSAGE_KIND_DELETE)
	if err != nil {
		return nil, err
	}
	return &parleyv1.DeleteMessageResponse{Ack: ack}, nil
}

// GetPresence implements ChatService.
func (s *Server) GetPresence(ctx context.Context, req *parleyv1.GetPresenceRequest) (*parleyv1.GetPresenceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &parleyv1.GetPresenceResponse{}
	for _, u := range req.GetUserIds() {
		if s.peersLocked(userOf(ctx), u) {
			resp.Presences = append(resp.Presences, &parleyv1.Presence{UserId: u, Online: s.streamsOfLocked(u) > 0})
		}
	}
	return resp, nil
}

// Signals returns every delivered, read and typing frame received on any
// Chat stream, in order.
func (s *Server) Signals() []*parleyv1.ChatRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.signals)
}

// Receipt returns user's positions in conv, nil if they have none.
func (s *Server) Receipt(conv, user string) *parleyv1.Receipt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.receipts[conv][user]
}

// --- attachments ---

// CorruptDownloads makes Download flip a bit in the content it sends, as a
// broken proxy or disk would.
func (s *Server) CorruptDownloads(corrupt bool) {
	s.mu.Lock()
	s.corrupt = corrupt
	s.mu.Unlock()
}

// Upload implements AttachmentService. Any user may download any file.
func (s *Server) Upload(_ context.Context, req *parleyv1.UploadRequest) (*parleyv1.UploadResponse, error) {
	if len(req.GetData()) == 0 || req.GetName() == "" || strings.Contains(req.GetName(), "/") {
		return nil, status.Error(codes.InvalidArgument, "data and a name without '/' are required")
	}
	sum := sha256.Sum256(req.GetData())
	id := hex.EncodeToString(sum[:])
	ct := req.GetContentType()
	if ct == "" {
		ct = "application/octet-stream"
	}
	s.mu.Lock()
	s.blobs[id] = &blob{data: slices.Clone(req.GetData()), name: req.GetName(), contentType: ct}
	s.mu.Unlock()
	return &parleyv1.UploadResponse{Attachment: &parleyv1.Attachment{Id: id, Name: req.GetName(), ContentType: ct, Size: uint64(len(req.GetData()))}}, nil
}

// Download implements AttachmentService, in chunks of 64 KiB.
func (s *Server) Download(req *parleyv1.DownloadRequest, stream grpc.ServerStreamingServer[parleyv1.DownloadResponse]) error {
	s.mu.Lock()
	b, ok := s.blobs[req.GetAttachmentId()]
	corrupt := s.corrupt
	s.mu.Unlock()
	if !ok {
		return status.Error(codes.PermissionDenied, "no such attachment for you")
	}
	data := b.data
	if corrupt {
		data = slices.Clone(data)
		data[len(data)/2] ^= 1
	}
	if err := stream.Send(&parleyv1.DownloadResponse{Part: &parleyv1.DownloadResponse_Attachment{Attachment: &parleyv1.Attachment{
		Id: req.GetAttachmentId(), Name: b.name, ContentType: b.contentType, Size: uint64(len(data)),
	}}}); err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), 64<<10)
		if err := stream.Send(&parleyv1.DownloadResponse{Part: &parleyv1.DownloadResponse_Chunk{Chunk: data[:n]}}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
