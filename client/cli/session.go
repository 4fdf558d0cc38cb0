package cli

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/parleychat/parley/client"
)

func (r *runner) listen(ctx context.Context, fs *flag.FlagSet, args []string) error {
	after := fs.Uint64("after", 0, "first replay the stored messages with seq above `N` (default: live messages only)")
	markDelivered := fs.Bool("mark-delivered", false, "mark messages delivered as they arrive, as a device of yours that got them")
	convs, err := r.parse(fs, args, 1, -1)
	if err != nil {
		return err
	}
	afterSet := false
	fs.Visit(func(f *flag.Flag) { afterSet = afterSet || f.Name == "after" })

	c, t, err := r.dial(ctx, true)
	if err != nil {
		return err
	}
	defer c.Close()
	positions := make(map[string]client.Position, len(convs))
	for _, conv := range convs {
		if afterSet {
			positions[conv] = client.Position{Seq: *after}
			continue
		}
		// Live only: start at the head. Asking also checks membership
		// before anything is printed.
		pos, err := r.head(ctx, c, conv, 0)
		if err != nil {
			return err
		}
		positions[conv] = pos
	}
	var opts []client.SessionOption
	if *markDelivered {
		opts = append(opts, client.WithAutoDelivered())
	}
	s, err := c.NewSession(ctx, opts...)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, conv := range convs {
		if err := s.SubscribeAt(conv, positions[conv]); err != nil {
			return err
		}
	}
	f := follower{r: r, me: me(c, t)}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-s.Events():
			if !ok {
				return f.ended(ctx, s)
			}
			if err := f.event(ev); err != nil {
				return err
			}
		}
	}
}

// head returns the conversation's newest seq and epoch, printing the last
// show messages on the way.
func (r *runner) head(ctx context.Context, c *client.Client, conv string, show int) (client.Position, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	page, err := c.History(ctx, conv, client.HistoryQuery{Limit: int32(max(show, 1))})
	if err != nil {
		return client.Position{}, err
	}
	if show > 0 {
		for _, m := range page.GetMessages() {
			r.printMessage(m)
		}
	}
	return client.Position{Seq: page.GetHeadSeq(), Epoch: page.GetEpoch()}, nil
}

// me is the user the command runs as: the saved login's when its token is
// the one in use, else the subject of the token.
func me(c *client.Client, t target) string {
	if t.cfg.User != "" && t.token == t.cfg.Token {
		return t.cfg.User
	}
	return c.UserID()
}

// follower prints a Session's events for listen and chat.
type follower struct {
	r    *runner
	me   string // the user's own receipts, typing and presence are not shown
	lost bool   // the connection dropped and has not come back yet
}

// event prints one event; an error ends the command.
func (f *follower) event(ev client.Event) error {
	w := f.r.stdout
	switch e := ev.(type) {
	case client.MessageEvent:
		f.r.printMessage(e.Message)
	case client.ReceiptEvent:
		rc := e.Receipt
		if rc.GetUserId() == f.me {
			break
		}
		switch d, rd := rc.GetDeliveredSeq(), rc.GetReadSeq(); {
		case rd >= d:
			fmt.Fprintf(w, "[%s] %s read up to #%d\n", rc.GetConversationId(), rc.GetUserId(), rd)
		case rd == 0:
			fmt.Fprintf(w, "[%s] %s received up to #%d\n", rc.GetConversationId(), rc.GetUserId(), d)
		default:
			fmt.Fprintf(w, "[%s] %s received up to #%d, read up to #%d\n", rc.GetConversationId(), rc.GetUserId(), d, rd)
		}
	case client.TypingEvent:
		ty := e.Typing
		if ty.GetUserId() == f.me {
			break
		}
		if ty.GetTyping() {
			fmt.Fprintf(w, "[%s] %s is typing\u2026\n", ty.GetConversationId(), ty.GetUserId())
		} else {
			fmt.Fprintf(w, "[%s] %s stopped typing\n", ty.GetConversationId(), ty.GetUserId())
		}
	case client.PresenceEvent:
		p := e.Presence
		switch {
		case p.GetUserId() == f.me:
		case p.GetOnline():
			fmt.Fprintf(w, "%s is online\n", p.GetUserId())
		case p.GetLastSeen() != nil:
			fmt.Fprintf(w, "%s is offline (last seen %s)\n", p.GetUserId(), p.GetLastSeen().AsTime().Local().Format("2006-01-02 15:04:05"))
		default:
			fmt.Fprintf(w, "%s is offline\n", p.GetUserId())
		}
	case client.NotificationEvent:
		n := e.Notification
		fmt.Fprintf(w, "notification [%s #%d] %s: %s\n", n.GetConversationId(), n.GetSeq(), n.GetSenderId(), oneLine(n.GetPreview(), 100))
	case client.StateEvent:
		switch e.State {
		case client.StateDisconnected:
			code, msg := describe(e.Err)
			fmt.Fprintf(f.r.stderr, "parley: disconnected (%s: %s); retrying in %s\n", code, msg, e.RetryIn.Round(time.Millisecond))
			f.lost = true
		case client.StateConnected:
			if f.lost {
				fmt.Fprintln(f.r.stderr, "parley: reconnected")
				f.lost = false
			}
		case client.StateStopped:
			return e.Err
		}
	case client.ErrorEvent:
		if e.Frame.GetFrame() == "subscribe" {
			return e.Err // nothing to follow
		}
		// Send errors are reported with their send; the rest are worth
		// a note but not the end.
		if e.Frame.GetFrame() != "send" {
			code, msg := describe(e.Err)
			fmt.Fprintf(f.r.stderr, "parley: %s: %s\n", code, msg)
		}
	}
	return nil
}

// ended explains a closed Events channel: nothing if ctx ended (Ctrl-C),
// else the Session's reason.
func (f *follower) ended(ctx context.Context, s *client.Session) error {
	if ctx.Err() != nil {
		return nil
	}
	return s.Err()
}

// ackResult is the outcome of one line typed in chat.
type ackResult struct {
	line string
	res  client.SendResult
}

func (r *runner) chat(ctx context.Context, fs *flag.FlagSet, args []string) error {
	last := fs.Int("last", 20, "show the last `N` messages first (0 for none)")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *last < 0 || *last > 500 {
		return usageError{msg: "--last must be 0 to 500", cmd: "chat"}
	}
	conv := pos[0]
	c, t, err := r.dial(ctx, true)
	if err != nil {
		return err
	}
	defer c.Close()
	start, err := r.head(ctx, c, conv, *last)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.NewSession(ctx, client.WithAutoDelivered())
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.SubscribeAt(conv, start); err != nil {
		return err
	}
	// What chat shows is on the screen, so it counts as read: what came
	// before, then every message as it is printed (the Session sends
	// only marks that move the position, as one frame when they come fast).
	if err := s.MarkRead(conv, start.Seq); err != nil {
		return err
	}

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r.stdin)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()

	acks := make(chan ackResult)
	outstanding := 0
	var drain <-chan time.Time // after end of input: how long acks may take
	f := follower{r: r, me: me(c, t)}
	for {
		if lines == nil && outstanding == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				lines = nil
				drain = time.After(r.timeout)
				continue
			}
			if line == "" {
				continue
			}
			_, result, err := s.SendAsync(ctx, conv, line)
			if err != nil {
				return err
			}
			outstanding++
			go func() {
				// Every send gets exactly one result, Close included.
				res := <-result
				select {
				case acks <- ackResult{line, res}:
				case <-ctx.Done():
				}
			}()
		case a := <-acks:
			outstanding--
			if a.res.Err != nil {
				code, msg := describe(a.res.Err)
				fmt.Fprintf(r.stderr, "parley: %s: %s (not sent: %q)\n", code, msg, a.line)
				continue
			}
			fmt.Fprintf(r.stdout, "\u2713 #%d\n", a.res.Ack.GetSeq())
		case ev, ok := <-s.Events():
			if !ok {
				return f.ended(ctx, s)
			}
			if err := f.event(ev); err != nil {
				return err
			}
			if m, ok := ev.(client.MessageEvent); ok && m.Message.GetConversationId() == conv {
				if err := s.MarkRead(conv, m.Message.GetSeq()); err != nil {
					return err
				}
			}
		case <-drain:
			return localError{codes.DeadlineExceeded, fmt.Sprintf("%d message(s) not acknowledged within %s", outstanding, r.timeout)}
		}
	}
}
