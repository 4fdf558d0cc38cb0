package chat

import (
	"cmp"
	"strings"
	"unicode/utf8"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// Limits on input that are not flags.
const (
	maxClientMsgID  = 64
	maxDisplayName  = 64
	maxTitle        = 128
	maxGroupMembers = 1000
	maxSubscribe    = 256
	maxPresence     = 1000
	maxHistoryLimit = 500
	defHistoryLimit = 50
	minPassword     = 8
	maxPassword     = 72 // bcrypt ignores the rest
)

// The shapes of names and ids. They are checked by hand rather than with
// regular expressions because every Send on a Chat stream checks a
// conversation id: a regexp match there was 2% of the server's CPU at
// 10,000 messages/s. validate_test.go holds each to the pattern it
// replaces:
//
//	username:        [a-z][a-z0-9_-]{2,31}
//	room name:       [a-z0-9_-]{1,64}
//	conversation id: dm:<username>:<username> | room:<room name> | group:[0-9a-f]{24}

// isNameByte reports whether c may appear in a username or room name.
func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// allNameBytes reports whether s has n bytes, lo <= n <= hi, all name bytes.
func allNameBytes(s string, lo, hi int) bool {
	if len(s) < lo || len(s) > hi {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return false
		}
	}
	return true
}

func isUsername(s string) bool {
	return allNameBytes(s, 3, 32) && 'a' <= s[0] && s[0] <= 'z'
}

func isRoomName(s string) bool { return allNameBytes(s, 1, 64) }

func isConvID(s string) bool {
	switch {
	case strings.HasPrefix(s, "dm:"):
		a, b, ok := strings.Cut(s[len("dm:"):], ":")
		return ok && isUsername(a) && isUsername(b)
	case strings.HasPrefix(s, "room:"):
		return isRoomName(s[len("room:"):])
	case strings.HasPrefix(s, "group:"):
		h := s[len("group:"):]
		if len(h) != 24 {
			return false
		}
		for i := 0; i < len(h); i++ {
			if !('0' <= h[i] && h[i] <= '9' || 'a' <= h[i] && h[i] <= 'f') {
				return false
			}
		}
		return true
	}
	return false
}

// Validate checks a request's shape (ids, lengths, limits, required fields)
// before any handler sees it, and answers INVALID_ARGUMENT with a message a
// person can act on. What needs state (membership, existence) is the
// handlers' job. The server runs it as an interceptor for every RPC; the
// Chat stream runs it on each frame. Unknown types pass.
func (s *Service) Validate(req any) error {
	return toStatus(s.validate(req))
}

func (s *Service) validate(req any) error {
	switch r := req.(type) {
	case *parleyv1.RegisterRequest:
		if err := validUsername("username", r.GetUsername()); err != nil {
			return err
		}
		if n := len(r.GetPassword()); n < minPassword || n > maxPassword {
			return invalid("password is %d bytes; it must be %d to %d bytes", n, minPassword, maxPassword)
		}
		return validText("display_name", r.GetDisplayName(), maxDisplayName)
	case *parleyv1.CreateDirectRequest:
		return validUsername("user_id", r.GetUserId())
	case *parleyv1.CreateRoomRequest:
		if !isRoomName(r.GetName()) {
			return invalid("room name %q is not valid: 1 to 64 characters of a-z, 0-9, '_' and '-'", truncate(r.GetName()))
		}
		return validText("title", r.GetTitle(), maxTitle)
	case *parleyv1.JoinRoomRequest:
		return validConvID(r.GetConversationId())
	case *parleyv1.CreateGroupRequest:
		if strings.TrimSpace(r.GetTitle()) == "" {
			return invalid("title is empty")
		}
		if err := validText("title", r.GetTitle(), maxTitle); err != nil {
			return err
		}
		if len(r.GetMemberIds()) > maxGroupMembers {
			return invalid("%d members; at most %d", len(r.GetMemberIds()), maxGroupMembers)
		}
		for _, m := range r.GetMemberIds() {
			if err := validUsername("member_ids", m); err != nil {
				return err
			}
		}
	case *parleyv1.AddMemberRequest:
		return cmp.Or(validConvID(r.GetConversationId()), validUsername("user_id", r.GetUserId()))
	case *parleyv1.RemoveMemberRequest:
		return cmp.Or(validConvID(r.GetConversationId()), validUsername("user_id", r.GetUserId()))
	case *parleyv1.LeaveConversationRequest:
		return validConvID(r.GetConversationId())
	case *parleyv1.GetConversationRequest:
		return validConvID(r.GetConversationId())
	case *parleyv1.SendRequest:
		return s.validSend(r)
	case *parleyv1.HistoryRequest:
		if err := validConvID(r.GetConversationId()); err != nil {
			return err
		}
		if l := r.GetLimit(); l < 0 || l > maxHistoryLimit {
			return invalid("limit is %d; it must be 0 (default %d) to %d", l, defHistoryLimit, maxHistoryLimit)
		}
		if (r.GetAfterSeq() != 0 || r.GetForward()) && r.GetBeforeSeq() != 0 {
			return invalid("set at most one of after_seq and before_seq")
		}
	case *parleyv1.SubscribeRequest:
		if len(r.GetConversations()) == 0 {
			return invalid("conversations is empty: name at least one conversation to follow")
		}
		seen := make(map[string]bool, len(r.GetConversations()))
		for _, p := range r.GetConversations() {
			if err := validPosition(p); err != nil {
				return err
			}
			if seen[p.GetConversationId()] {
				return invalid("conversation %q is listed twice", p.GetConversationId())
			}
			seen[p.GetConversationId()] = true
		}
	case *parleyv1.MarkDeliveredRequest:
		return validConvID(r.GetConversationId())
	case *parleyv1.MarkReadRequest:
		return validConvID(r.GetConversationId())
	case *parleyv1.GetReceiptsRequest:
		return validConvID(r.GetConversationId())
	case *parleyv1.SetTypingRequest:
		return validConvID(r.GetConversationId())
	case *parleyv1.EditMessageRequest:
		if err := validTarget(r.GetConversationId(), r.GetSeq(), r.GetClientMessageId()); err != nil {
			return err
		}
		return s.validBody(r.GetBody(), 0)
	case *parleyv1.DeleteMessageRequest:
		return validTarget(r.GetConversationId(), r.GetSeq(), r.GetClientMessageId())
	case *parleyv1.GetPresenceRequest:
		if n := len(r.GetUserIds()); n > maxPresence {
			return invalid("%d user_ids; at most %d", n, maxPresence)
		}
		for _, u := range r.GetUserIds() {
			if err := validUsername("user_ids", u); err != nil {
				return err
			}
		}
	case *parleyv1.ChatRequest:
		switch f := r.GetFrame().(type) {
		case *parleyv1.ChatRequest_Send:
			return s.validSend(f.Send)
		case *parleyv1.ChatRequest_Subscribe:
			return validPosition(f.Subscribe)
		case *parleyv1.ChatRequest_Unsubscribe:
			return validConvID(f.Unsubscribe.GetConversationId())
		case *parleyv1.ChatRequest_Ping:
		case *parleyv1.ChatRequest_Delivered:
			return s.validate(f.Delivered)
		case *parleyv1.ChatRequest_Read:
			return s.validate(f.Read)
		case *parleyv1.ChatRequest_Typing:
			return s.validate(f.Typing)
		case *parleyv1.ChatRequest_Edit:
			return s.validate(f.Edit)
		case *parleyv1.ChatRequest_Delete:
			return s.validate(f.Delete)
		default:
			return invalid("empty or unknown frame; this server understands send, subscribe, unsubscribe, ping, delivered, read, typing, edit and delete")
		}
	}
	return nil
}

func validUsername(field, s string) error {
	if !isUsername(s) {
		return invalid("%s %q is not a valid user id: 3 to 32 characters of a-z, 0-9, '_' and '-', starting with a letter", field, truncate(s))
	}
	return nil
}

func validConvID(s string) error {
	if s == "" {
		return invalid("conversation_id is empty")
	}
	if !isConvID(s) {
		return invalid("conversation_id %q is malformed: want dm:<user>:<user>, room:<name> or group:<24 hex digits>", truncate(s))
	}
	return nil
}

func validClientMsgID(s string) error {
	if s == "" {
		return invalid("client_message_id is empty: choose a unique id per message (a UUID will do) and reuse it on resend")
	}
	if len(s) > maxClientMsgID {
		return invalid("client_message_id is %d bytes; at most %d", len(s), maxClientMsgID)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return invalid("client_message_id must be printable ASCII without spaces")
		}
	}
	return nil
}

func (s *Service) validBody(body string, attachments int) error {
	if strings.TrimSpace(body) == "" && attachments == 0 {
		return invalid("body is empty")
	}
	if len(body) > s.opts.maxBody {
		return exhausted("message size", "body is %d bytes; at most %d (--max-body)", len(body), s.opts.maxBody)
	}
	if !utf8.ValidString(body) {
		return invalid("body is not valid UTF-8")
	}
	return nil
}

func (s *Service) validSend(r *parleyv1.SendRequest) error {
	if err := validConvID(r.GetConversationId()); err != nil {
		return err
	}
	if err := validClientMsgID(r.GetClientMessageId()); err != nil {
		return err
	}
	if err := validAttachments(r.GetAttachments()); err != nil {
		return err
	}
	return s.validBody(r.GetBody(), len(r.GetAttachments()))
}

// validTarget checks the address of an edit or delete.
func validTarget(conv string, seq uint64, cmid string) error {
	if err := validConvID(conv); err != nil {
		return err
	}
	if seq == 0 {
		return invalid("seq is 0: name the message to change by its seq")
	}
	return validClientMsgID(cmid)
}

func validPosition(p *parleyv1.SubscribePosition) error {
	if p == nil {
		return invalid("subscribe position is empty")
	}
	if err := validConvID(p.GetConversationId()); err != nil {
		return err
	}
	if len(p.GetEpoch()) > 64 {
		return invalid("epoch is too long")
	}
	return nil
}

func validText(field, s string, max int) error {
	if !utf8.ValidString(s) {
		return invalid("%s is not valid UTF-8", field)
	}
	if n := utf8.RuneCountInString(s); n > max {
		return invalid("%s is %d characters; at most %d", field, n, max)
	}
	return nil
}

// truncate keeps error messages short when echoing hostile input.
func truncate(s string) string {
	if len(s) <= 80 {
		return s
	}
	return s[:77] + "..."
}
