package client

import (
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// IsPost reports whether m is an ordinary message rather than an edit or a
// delete of one.
func IsPost(m *parleyv1.Message) bool {
	k := m.GetKind()
	return k == parleyv1.MessageKind_MESSAGE_KIND_POST || k == parleyv1.MessageKind_MESSAGE_KIND_UNSPECIFIED
}

// Apply returns post as it stands after change, an edit or delete event
// whose TargetSeq is post's seq: an edit replaces the body and sets
// EditedAt to the event's SentAt; a delete leaves a tombstone (Deleted, no
// body, no attachments). That is how History returns such a post.
//
// Like the server, Apply changes nothing when change is not an edit or
// delete of post (another conversation or seq, another sender, or a post
// that is already a tombstone); it then returns post itself. Otherwise it
// returns a changed copy and leaves post alone, so it may be given the
// messages of MessageEvents, which must not be modified.
func Apply(post, change *parleyv1.Message) *parleyv1.Message {
	if IsPost(change) || !IsPost(post) || post.GetDeleted() ||
		change.GetConversationId() != post.GetConversationId() ||
		change.GetTargetSeq() != post.GetSeq() ||
		change.GetSenderId() != post.GetSenderId() {
		return post
	}
	out := proto.CloneOf(post)
	switch change.GetKind() {
	case parleyv1.MessageKind_MESSAGE_KIND_EDIT:
		out.Body = change.GetBody()
		out.EditedAt = change.GetSentAt()
	case parleyv1.MessageKind_MESSAGE_KIND_DELETE:
		out.Body, out.Attachments, out.Deleted = "", nil, true
	default:
		return post
	}
	return out
}
