package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Headers sent with every POST.
const (
	HeaderDelivery  = "X-Parley-Delivery"  // same id on every attempt for one event
	HeaderSignature = "X-Parley-Signature" // "sha256=" + hex HMAC of the body, with WithSecret
)

// payload is the JSON body of a POST.
type payload struct {
	Type           string   `json:"type"`
	Recipients     []string `json:"recipients"`
	ConversationID string   `json:"conversation_id"`
	Seq            uint64   `json:"seq"`
	SenderID       string   `json:"sender_id"`
	Preview        string   `json:"preview"`
	SentAt         string   `json:"sent_at"`
}

// outcome is what one attempt came to.
type outcome int

const (
	delivered outcome = iota // 2xx
	retry                    // network error, timeout, 5xx, 429
	refused                  // any other status; repeating it would not help
	cancelled                // Close cut the attempt off
)

// deliver sends ev, retrying with backoff, and counts how it ended. It runs
// on a worker goroutine and returns early once Close cancels n.ctx.
func (n *Notifier) deliver(ev Event) {
	if n.ctx.Err() != nil {
		n.drop(true)
		return
	}
	log := n.cfg.log.With(
		slog.String("conversation", ev.ConversationID),
		slog.Uint64("seq", ev.Seq),
	)
	recipients := ev.UserIDs
	if recipients == nil {
		recipients = []string{} // "[]", not "null"
	}
	body, err := json.Marshal(payload{
		Type:           "message",
		Recipients:     recipients,
		ConversationID: ev.ConversationID,
		Seq:            ev.Seq,
		SenderID:       ev.SenderID,
		Preview:        ev.Preview,
		SentAt:         ev.SentAt.UTC().Format(time.RFC3339Nano),
	})
	if err != nil { // only strings and numbers: cannot happen
		log.Error("notify: encoding event", slog.Any("err", err))
		n.failed.Add(1)
		return
	}
	h := make(http.Header, 4)
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "parley-notify")
	// Made here rather than per attempt: the receiver dedups on it.
	id := rand.Text()
	h.Set(HeaderDelivery, id)
	if n.cfg.secret != nil {
		h.Set(HeaderSignature, sign(n.cfg.secret, body))
	}
	log = log.With(slog.String("delivery", id))

	for attempt := 0; ; attempt++ {
		out, after, detail := n.post(body, h)
		switch out {
		case delivered:
			n.delivered.Add(1)
			return
		case refused:
			// The preview is message text; it stays out of the log.
			log.Warn("notify: webhook refused event", slog.String("response", detail))
			n.failed.Add(1)
			return
		case cancelled:
			n.drop(true)
			return
		}
		if attempt == n.cfg.retries {
			log.Warn("notify: dropping event after retries",
				slog.Int("attempts", attempt+1), slog.String("last", detail))
			n.drop(false)
			return
		}
		d := backoff(n.cfg.backoffMin, n.cfg.backoffMax, attempt)
		if after >= 0 {
			d = min(after, n.cfg.backoffMax)
		}
		if err := n.cfg.wait(n.ctx, d); err != nil {
			n.drop(true)
			return
		}
		n.retried.Add(1)
	}
}

// drop counts an event given up on; byClose marks one that Close cut off.
func (n *Notifier) drop(byClose bool) {
	n.dropped.Add(1)
	if byClose {
		n.cutOff.Add(1)
	}
}

// post makes one attempt. after is the Retry-After delay the server asked
// for, or -1. detail describes a failure for the log.
func (n *Notifier) post(body []byte, h http.Header) (out outcome, after time.Duration, detail string) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, bytes.NewReader(body))
	if err != nil { // the URL was checked by New: cannot happen
		return refused, -1, err.Error()
	}
	req.Header = h.Clone()
	resp, err := n.client.Do(req)
	if err != nil {
		if n.ctx.Err() != nil {
			return cancelled, -1, ""
		}
		// The client's error names the URL, which may carry a token.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return retry, -1, err.Error()
	}
	defer resp.Body.Close()
	// Read a little for the log, and the rest (up to a bound) so the
	// connection can be reused for the next event.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))

	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return delivered, -1, ""
	case code == http.StatusTooManyRequests || code >= 500:
		// Retry-After is honoured on any retryable status: 503 uses it too.
		return retry, retryAfter(resp.Header.Get("Retry-After")), resp.Status
	default:
		return refused, -1, fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(snippet))
	}
}

// retryAfter parses a Retry-After value, delay-seconds or an HTTP date, and
// returns -1 when there is none or it does not parse.
func retryAfter(v string) time.Duration {
	if v == "" {
		return -1
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return -1
		}
		// Cap before multiplying so a huge value cannot overflow.
		return time.Duration(min(s, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return -1
}

// backoff returns the wait before retry number attempt+1. The ceiling
// doubles per attempt from 2*lo up to hi, and the wait is drawn from the
// upper half of it (never below lo), so events that failed together do not
// retry together.
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	ceil := lo
	for range attempt + 1 {
		if ceil > hi/2 { // doubling would pass hi, or overflow
			ceil = hi
			break
		}
		ceil *= 2
	}
	ceil = min(ceil, hi)
	floor := max(lo, ceil/2)
	return floor + mrand.N(ceil-floor+1)
}

// sign returns the X-Parley-Signature value for body.
func sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
