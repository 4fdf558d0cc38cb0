package jsget_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/parleychat/parley/server/jsget"
	"github.com/parleychat/parley/server/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The leader answers by sequence, last on a subject and next on a subject,
// with the stored headers; a miss is ErrNotFound, a stream that does not
// exist JetStream's own error.
func TestLeader(t *testing.T) {
	cl := natstest.Start(t, natstest.Options{Nodes: 1})
	nc, err := nats.Connect(cl.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*nats.Msg{
		{Subject: "t.a", Data: []byte("a1")},
		{Subject: "t.b", Data: []byte("b1"), Header: nats.Header{"K": []string{"v"}}},
		{Subject: "t.a", Data: []byte("a2")},
	} {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		req  jsget.Request
		want string // subject/seq/data/K header; "" for ErrNotFound
	}{
		{jsget.Request{Seq: 1}, "t.a/1/a1/"},
		{jsget.Request{Seq: 2}, "t.b/2/b1/v"},
		{jsget.Request{LastFor: "t.a"}, "t.a/3/a2/"},
		{jsget.Request{Seq: 2, NextFor: "t.a"}, "t.a/3/a2/"},
		{jsget.Request{Seq: 4}, ""},
		{jsget.Request{LastFor: "t.c"}, ""},
	}
	for _, tt := range tests {
		m, err := jsget.Leader(ctx, nc, "T", tt.req)
		if tt.want == "" {
			if !errors.Is(err, jsget.ErrNotFound) {
				t.Errorf("Leader(%+v) = %+v, %v; want ErrNotFound", tt.req, m, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Leader(%+v): %v", tt.req, err)
		}
		if got := m.Subject + "/" + strconv.FormatUint(m.Seq, 10) + "/" + string(m.Data) + "/" + m.Header.Get("K"); got != tt.want {
			t.Errorf("Leader(%+v) = %s, want %s", tt.req, got, tt.want)
		}
	}
	var api *jetstream.APIError
	if _, err := jsget.Leader(ctx, nc, "NOPE", jsget.Request{Seq: 1}); !errors.As(err, &api) || errors.Is(err, jsget.ErrNotFound) {
		t.Errorf("a stream that does not exist: %v; want JetStream's error", err)
	}
}
