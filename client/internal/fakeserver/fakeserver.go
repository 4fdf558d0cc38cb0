// Package fakeserver is an in-memory Parley server for tests of the Go
// client and the CLI. It keeps the protocol's promises (per-conversation
// seqs, acks, replay then live, dedup of resends, epochs) on a real
// loopback gRPC listener, and has knobs to break them on purpose: kill
// streams with a status, withhold acks or pongs, reject a send, restart on
// the same address, wipe the log into a new epoch, inject raw deliveries.
// It is not a reference for the real server: storage is a slice and every
// ack is immediate.
package fakeserver

import (
	"context"
	"crypto/rand"
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
)

// New starts a fake server on a loopback port and stops it when the test
// ends.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		users:   make(map[string]string),
		tokens:  make(map[string]string),
		convs:   make(map[string]*conversation),
		epoch:   randomID(),
		acks:    make(map[string]*parleyv1.SendResponse),
		streams: make(map[*stream]struct{}),
		rejects: make(map[string]*reject),
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
	s.streams[st] = struct{}{}
	s.opened++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
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
	default:
		fail("unknown", codes.InvalidArgument, "empty frame", "", "")
	}
}

// publishLocked stores and fans out a message, or returns the original
// ack of a resend. s.mu must be held.
func (s *Server) publishLocked(sender string, req *parleyv1.SendRequest) (*parleyv1.SendResponse, error) {
	if req.GetBody() == "" {
		return nil, status.Error(codes.InvalidArgument, "empty body")
	}
	if id := req.GetClientMessageId(); id == "" || len(id) > 64 {
		return nil, status.Error(codes.InvalidArgument, "client_message_id must be 1 to 64 characters")
	}
	c, ok := s.convs[req.GetConversationId()]
	if !ok || !c.members[sender] {
		return nil, status.Error(codes.PermissionDenied, "not a member of this conversation")
	}
	key := sender + "\x00" + req.GetClientMessageId()
	if ack, ok := s.acks[key]; ok {
		dup := proto.CloneOf(ack)
		dup.Duplicate = true
		return dup, nil
	}
	prev := c.last
	c.last++
	m := &parleyv1.Message{
		ConversationId:  c.info.Id,
		Seq:             c.last,
		SenderId:        sender,
		ClientMessageId: req.GetClientMessageId(),
		Body:            req.GetBody(),
		SentAt:          timestamppb.Now(),
		PrevSeq:         prev,
	}
	c.msgs = append(c.msgs, m)
	c.active = time.Now()
	s.fanOutLocked(m)
	ack := &parleyv1.SendResponse{
		ConversationId:  m.ConversationId,
		ClientMessageId: m.ClientMessageId,
		Seq:             m.Seq,
		SentAt:          m.SentAt,
	}
	s.acks[key] = ack
	return ack, nil
}

func (s *Server) fanOutLocked(m *parleyv1.Message) {
	for st := range s.streams {
		if st.subs[m.GetConversationId()] {
			st.push(&parleyv1.ChatResponse{Frame: &parleyv1.ChatResponse_Message{Message: m}})
		}
	}
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
	if req.GetAfterSeq() != 0 && req.GetBeforeSeq() != 0 {
		return nil, status.Error(codes.InvalidArgument, "set at most one of after_seq and before_seq")
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
	case req.GetAfterSeq() != 0:
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
	return &parleyv1.CreateDirectResponse{Conversation: c.view()}, nil
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
	return &parleyv1.CreateRoomResponse{Conversation: c.view()}, nil
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
	return &parleyv1.JoinRoomResponse{Conversation: c.view()}, nil
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
	return &parleyv1.CreateGroupResponse{Conversation: c.view()}, nil
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
	return &parleyv1.AddMemberResponse{Conversation: c.view()}, nil
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
	return &parleyv1.RemoveMemberResponse{Conversation: c.view()}, nil
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
	return &parleyv1.GetConversationResponse{Conversation: c.view()}, nil
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
		resp.Conversations = append(resp.Conversations, c.view())
	}
	return resp, nil
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
