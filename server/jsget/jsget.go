// Package jsget reads one message of a JetStream stream from the stream's
// leader ($JS.API.STREAM.MSG.GET). The jetstream package reads a stream
// that allows direct gets (a KV bucket, Parley's log) through any of its
// replicas, and a replica may be a moment behind what another node just
// wrote; the leader has every acknowledged write. The cluster log and the
// cluster state both fall back to it when a direct get cannot be trusted.
package jsget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Request names one message: by sequence, the last one on a subject, or
// the first one on a subject at or after a sequence.
type Request struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

// Msg is one stored message.
type Msg struct {
	Subject string
	Seq     uint64
	Header  nats.Header // nil when the message has none
	Data    []byte      // owned by the caller
}

var (
	// ErrNotFound is a request that matches no message.
	ErrNotFound = errors.New("jsget: no such message")
	// ErrBadReply is an answer that is not a message get response.
	ErrBadReply = errors.New("jsget: malformed reply")
)

// Leader asks the leader of stream for the message req names. Besides
// ErrNotFound and ErrBadReply it fails with the request's own error (no
// answer in time, no responders) or, for what JetStream refuses, a
// *jetstream.APIError.
func Leader(ctx context.Context, nc *nats.Conn, stream string, req Request) (Msg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return Msg{}, err
	}
	resp, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, body)
	if err != nil {
		return Msg{}, fmt.Errorf("jsget %s: %w", stream, err)
	}
	var r struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject string `json:"subject"`
			Seq     uint64 `json:"seq"`
			Hdrs    []byte `json:"hdrs"`
			Data    []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return Msg{}, fmt.Errorf("jsget %s: %w: %w", stream, ErrBadReply, err)
	}
	switch {
	case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound, r.Error == nil && r.Message == nil:
		return Msg{}, ErrNotFound
	case r.Error != nil:
		return Msg{}, fmt.Errorf("jsget %s: %w", stream, r.Error)
	}
	m := Msg{Subject: r.Message.Subject, Seq: r.Message.Seq, Data: r.Message.Data}
	if len(r.Message.Hdrs) > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(r.Message.Hdrs); err != nil {
			return Msg{}, fmt.Errorf("jsget %s: %w: headers: %w", stream, ErrBadReply, err)
		}
	}
	return m, nil
}
