package chat

import (
	"regexp"
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
	maxHistoryLimit = 500
	defHistoryLimit = 50
	minPassword     = 8
	maxPassword     = 72 // bcrypt ignores the rest
)

var (
	usernameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{2,31}$`)
	roomNameRE = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
	convIDRE   = regexp.MustCompile(`^(dm:[a-z][a-z0-9_-]{2,31}:[a-z][a-z0-9_-]{2,31}|room:[a-z0-9_-]{1,64}|group:[0-9a-f]{24})$`)
)

func validUsername(field, s string) error {
	if !usernameRE.MatchString(s) {
		return invalid("%s %q is not a valid user id: 3 to 32 characters of a-z, 0-9, '_' and '-', starting with a letter", field, truncate(s))
	}
	return nil
}

func validConvID(s string) error {
	if s == "" {
		return invalid("conversation_id is empty")
	}
	if !convIDRE.MatchString(s) {
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

func (s *Service) validBody(body string) error {
	if strings.TrimSpace(body) == "" {
		return invalid("body is empty")
	}
	if len(body) > s.opts.maxBody {
		return invalid("body is %d bytes; at most %d", len(body), s.opts.maxBody)
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
	return s.validBody(r.GetBody())
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
