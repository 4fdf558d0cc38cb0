package client_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/parleychat/parley/client"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

func receipt(user string, delivered, read uint64) *parleyv1.Receipt {
	return &parleyv1.Receipt{ConversationId: "group:g", UserId: user, DeliveredSeq: delivered, ReadSeq: read}
}

func TestReceiptsState(t *testing.T) {
	r := client.NewReceipts("group:g",
		receipt("alice", 9, 9),
		receipt("bob", 5, 3),
		receipt("carol", 7, 0),
		&parleyv1.Receipt{ConversationId: "room:other", UserId: "dave", ReadSeq: 100},
	)
	tests := []struct {
		name      string
		members   []string // nil: unknown
		seq       uint64
		sender    string
		status    client.Status
		delivered []string
		read      []string
	}{
		{"read by all", nil, 3, "carol", client.StatusRead, []string{"alice", "bob"}, []string{"alice", "bob"}},
		{"delivered to all, read by some", nil, 5, "alice", client.StatusDelivered, []string{"bob", "carol"}, nil},
		{"delivered to some", nil, 6, "alice", client.StatusSent, []string{"carol"}, nil},
		{"the sender's own positions never count", nil, 9, "alice", client.StatusSent, nil, nil},
		{"another sender", nil, 3, "bob", client.StatusDelivered, []string{"alice", "carol"}, []string{"alice"}},
		{"a silent member holds it back", []string{"alice", "bob", "carol", "erin"}, 3, "alice", client.StatusSent, []string{"bob", "carol"}, []string{"bob"}},
		{"members without carol", []string{"alice", "bob"}, 3, "alice", client.StatusRead, []string{"bob"}, []string{"bob"}},
		{"alone", []string{"alice"}, 1, "alice", client.StatusSent, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.members != nil {
				r.SetMembers(tt.members...)
				defer r.SetMembers()
			}
			st := r.State(tt.seq, tt.sender)
			if st.Status != tt.status || !slices.Equal(st.DeliveredTo, tt.delivered) || !slices.Equal(st.ReadBy, tt.read) {
				t.Errorf("State(%d, %s) = %+v (%s), want %s delivered to %q read by %q", tt.seq, tt.sender, st, st.Status, tt.status, tt.delivered, tt.read)
			}
		})
	}
}

func TestReceiptsOnlyMoveForward(t *testing.T) {
	r := client.NewReceipts("group:g")
	for _, step := range []struct {
		rc              *parleyv1.Receipt
		changed         bool
		delivered, read uint64
	}{
		{receipt("bob", 4, 0), true, 4, 0},
		{receipt("bob", 2, 0), false, 4, 0}, // late and stale
		{receipt("bob", 0, 6), true, 6, 6},  // read implies delivered
		{receipt("bob", 6, 6), false, 6, 6}, // again
		{&parleyv1.Receipt{ConversationId: "room:other", UserId: "bob", ReadSeq: 50}, false, 6, 6},
	} {
		if got := r.Update(step.rc); got != step.changed {
			t.Errorf("Update(%v) = %v, want %v", step.rc, got, step.changed)
		}
		if d, rd := r.Position("bob"); d != step.delivered || rd != step.read {
			t.Errorf("after %v: position %d/%d, want %d/%d", step.rc, d, rd, step.delivered, step.read)
		}
	}
}

func TestApply(t *testing.T) {
	at := timestamppb.Now()
	post := &parleyv1.Message{ConversationId: "room:x", Seq: 3, SenderId: "alice", Body: "helo",
		Attachments: []*parleyv1.Attachment{{Id: "ab", Name: "a.txt"}}}
	edit := &parleyv1.Message{ConversationId: "room:x", Seq: 7, SenderId: "alice", Body: "hello", SentAt: at,
		Kind: parleyv1.MessageKind_MESSAGE_KIND_EDIT, TargetSeq: 3}
	del := &parleyv1.Message{ConversationId: "room:x", Seq: 8, SenderId: "alice",
		Kind: parleyv1.MessageKind_MESSAGE_KIND_DELETE, TargetSeq: 3}
	with := func(m *parleyv1.Message, f func(*parleyv1.Message)) *parleyv1.Message {
		c := proto.CloneOf(m)
		f(c)
		return c
	}
	edited := with(post, func(m *parleyv1.Message) { m.Body, m.EditedAt = "hello", at })
	tombstone := with(post, func(m *parleyv1.Message) { m.Body, m.Attachments, m.Deleted = "", nil, true })

	tests := []struct {
		name         string
		post, change *parleyv1.Message
		want         *parleyv1.Message
	}{
		{"edit", post, edit, edited},
		{"delete", post, del, tombstone},
		// As on the server, a tombstone keeps the time of its last edit.
		{"delete an edited post", edited, del, with(tombstone, func(m *parleyv1.Message) { m.EditedAt = at })},
		{"edit again (idempotent)", edited, edit, edited},
		{"nothing brings a tombstone back", tombstone, edit, tombstone},
		{"another seq", post, with(edit, func(m *parleyv1.Message) { m.TargetSeq = 4 }), post},
		{"another sender", post, with(edit, func(m *parleyv1.Message) { m.SenderId = "mallory" }), post},
		{"another conversation", post, with(edit, func(m *parleyv1.Message) { m.ConversationId = "room:y" }), post},
		{"a post is no change", post, with(edit, func(m *parleyv1.Message) { m.Kind = parleyv1.MessageKind_MESSAGE_KIND_POST }), post},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := proto.CloneOf(tt.post)
			if got := client.Apply(tt.post, tt.change); !proto.Equal(got, tt.want) {
				t.Errorf("Apply = %v, want %v", got, tt.want)
			}
			if !proto.Equal(tt.post, orig) {
				t.Errorf("Apply modified its post: %v", tt.post)
			}
		})
	}
	if client.IsPost(edit) || !client.IsPost(post) {
		t.Error("IsPost is wrong")
	}
}
