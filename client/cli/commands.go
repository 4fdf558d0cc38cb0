package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"google.golang.org/grpc/codes"

	"github.com/parleychat/parley/client"
	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// target is where and as whom a command talks to the server.
type target struct {
	server string
	tls    bool
	token  string
	cfg    Config
	dir    string
}

// resolve works out the server, TLS and token: --server, then
// $PARLEY_SERVER, then the saved login's server, then DefaultServer. The
// saved token is used only with the server that issued it, so that it is
// never sent to another one; $PARLEY_TOKEN overrides it.
func (r *runner) resolve() (target, error) {
	dir, err := ConfigDir(r.getenv)
	if err != nil {
		return target{}, err
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		return target{}, err
	}
	t := target{server: r.server, tls: r.tls, cfg: cfg, dir: dir}
	if t.server == "" {
		t.server = r.getenv("PARLEY_SERVER")
	}
	if t.server == "" {
		t.server = cfg.Server
	}
	if t.server == "" {
		t.server = DefaultServer
	}
	if t.server == cfg.Server {
		t.token = cfg.Token
		if !r.tlsSet {
			t.tls = cfg.TLS
		}
	}
	if tok := r.getenv("PARLEY_TOKEN"); tok != "" {
		t.token = tok
	}
	return t, nil
}

// dial connects to the resolved server; with needLogin, only if there is a
// token to send.
func (r *runner) dial(ctx context.Context, needLogin bool) (*client.Client, target, error) {
	t, err := r.resolve()
	if err != nil {
		return nil, t, err
	}
	if needLogin && t.token == "" {
		return nil, t, errNotLoggedIn
	}
	opts := []client.Option{client.WithToken(t.token)}
	if t.tls {
		opts = append(opts, client.WithTLS(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	c, err := client.Dial(ctx, t.server, opts...)
	return c, t, err
}

// call bounds one unary call by --timeout.
func (r *runner) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

func (r *runner) password(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if pw := r.getenv("PARLEY_PASSWORD"); pw != "" {
		return pw, nil
	}
	// No terminal tricks: the standard library cannot turn echo off, and a
	// piped password must work the same way.
	fmt.Fprint(r.stderr, "Password: ")
	line, err := bufio.NewReader(r.stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", localError{codes.InvalidArgument, "no password: use --password, $PARLEY_PASSWORD or type it on standard input"}
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (r *runner) register(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pw := fs.String("password", "", "the new account's `password`, 8 to 72 bytes (default $PARLEY_PASSWORD, else a prompt)")
	display := fs.String("display-name", "", "`name` shown to others (default the username)")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return r.authenticate(ctx, pos[0], *pw, func(c *client.Client, ctx context.Context, password string) (string, *parleyv1.AccessToken, error) {
		resp, err := c.Register(ctx, pos[0], password, *display)
		return resp.GetUserId(), resp.GetToken(), err
	}, "registered")
}

func (r *runner) login(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pw := fs.String("password", "", "the account's `password` (default $PARLEY_PASSWORD, else a prompt)")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return r.authenticate(ctx, pos[0], *pw, func(c *client.Client, ctx context.Context, password string) (string, *parleyv1.AccessToken, error) {
		resp, err := c.Login(ctx, pos[0], password)
		return resp.GetUserId(), resp.GetToken(), err
	}, "logged in as")
}

// authenticate runs register or login and saves what it returns.
func (r *runner) authenticate(ctx context.Context, user, pwFlag string,
	do func(*client.Client, context.Context, string) (string, *parleyv1.AccessToken, error), verb string) error {
	return r.withPassword(ctx, pwFlag, func(c *client.Client, t target, ctx context.Context, password string) error {
		userID, tok, err := do(c, ctx, password)
		if err != nil {
			return err
		}
		cfg := Config{Server: t.server, TLS: t.tls, User: userID, Token: tok.GetValue()}
		if err := SaveConfig(t.dir, cfg); err != nil {
			return err
		}
		fmt.Fprintf(r.stdout, "%s %s on %s\n", verb, userID, t.server)
		return nil
	})
}

// withPassword gets the password, dials without a login, and runs do in
// one call's time.
func (r *runner) withPassword(ctx context.Context, pwFlag string, do func(*client.Client, target, context.Context, string) error) error {
	password, err := r.password(pwFlag)
	if err != nil {
		return err
	}
	c, t, err := r.dial(ctx, false)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := r.call(ctx)
	defer cancel()
	return do(c, t, ctx, password)
}

func (r *runner) deleteAccount(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pw := fs.String("password", "", "the account's `password` (default $PARLEY_PASSWORD, else a prompt)")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return r.withPassword(ctx, *pw, func(c *client.Client, t target, ctx context.Context, password string) error {
		if err := c.DeleteAccount(ctx, pos[0], password); err != nil {
			return err
		}
		fmt.Fprintf(r.stdout, "deleted account %s on %s\n", pos[0], t.server)
		cfg, err := LoadConfig(t.dir)
		if err != nil || cfg.User != pos[0] || cfg.Server != t.server {
			return err
		}
		cfg.User, cfg.Token = "", ""
		return SaveConfig(t.dir, cfg)
	})
}

func (r *runner) logout(_ context.Context, fs *flag.FlagSet, args []string) error {
	if _, err := r.parse(fs, args, 0, 0); err != nil {
		return err
	}
	dir, err := ConfigDir(r.getenv)
	if err != nil {
		return err
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		return err
	}
	if cfg.Token == "" && cfg.User == "" {
		fmt.Fprintln(r.stdout, "not logged in")
		return nil
	}
	user := cfg.User
	cfg.User, cfg.Token = "", ""
	if err := SaveConfig(dir, cfg); err != nil {
		return err
	}
	fmt.Fprintf(r.stdout, "logged out %s\n", user)
	return nil
}

func (r *runner) send(ctx context.Context, fs *flag.FlagSet, args []string) error {
	var files []string
	fs.Func("file", "attach the file at `path` (repeat for several)", func(v string) error {
		files = append(files, v)
		return nil
	})
	pos, err := r.parse(fs, args, 1, -1)
	if err != nil {
		return err
	}
	body := strings.Join(pos[1:], " ")
	if len(pos) == 2 && pos[1] == "-" {
		b, err := io.ReadAll(r.stdin)
		if err != nil {
			return fmt.Errorf("read message from standard input: %w", err)
		}
		body = strings.TrimRight(string(b), "\r\n")
	}
	if body == "" && len(files) == 0 {
		if len(pos) == 1 {
			return usageError{msg: "missing arguments", cmd: "send"}
		}
		return usageError{msg: "empty message", cmd: "send"}
	}
	// Read every file before anything is sent, so that a typo sends
	// nothing.
	contents := make([][]byte, len(files))
	for i, path := range files {
		if contents[i], err = os.ReadFile(path); err != nil {
			return localError{codes.InvalidArgument, fmt.Sprintf("attach %s: %v", path, err)}
		}
		if len(contents[i]) == 0 {
			return localError{codes.InvalidArgument, fmt.Sprintf("attach %s: the file is empty", path)}
		}
	}
	c, _, err := r.dial(ctx, true)
	if err != nil {
		return err
	}
	defer c.Close()
	var atts []*parleyv1.Attachment
	for i, path := range files {
		att, err := r.upload(ctx, c, path, contents[i])
		if err != nil {
			return err
		}
		atts = append(atts, att)
	}
	ctx, cancel := r.call(ctx)
	defer cancel()
	ack, err := c.Send(ctx, pos[0], body, client.WithAttachments(atts...))
	if err != nil {
		return err
	}
	fmt.Fprintf(r.stdout, "sent [%s #%d]\n", ack.GetConversationId(), ack.GetSeq())
	for _, a := range atts {
		fmt.Fprintf(r.stdout, "attached %s %s\n", a.GetId(), a.GetName())
	}
	return nil
}

// upload stores one file under its base name.
func (r *runner) upload(ctx context.Context, c *client.Client, path string, data []byte) (*parleyv1.Attachment, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	return c.Upload(ctx, filepath.Base(path), contentType(path, data), data)
}

// contentType guesses a file's MIME type from its extension, else from its
// first bytes.
func contentType(path string, data []byte) string {
	if t := mime.TypeByExtension(filepath.Ext(path)); t != "" {
		return t
	}
	return http.DetectContentType(data)
}

func (r *runner) history(ctx context.Context, fs *flag.FlagSet, args []string) error {
	before := fs.Uint64("before", 0, "show the newest messages with seq below `N`")
	after := fs.Uint64("after", 0, "show the oldest messages with seq above `N`")
	limit := fs.Int("limit", 50, "at most `N` messages (1 to 500)")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	afterSet := false
	fs.Visit(func(f *flag.Flag) { afterSet = afterSet || f.Name == "after" })
	if *before != 0 && afterSet {
		return usageError{msg: "set at most one of --before and --after", cmd: "history"}
	}
	if *limit < 1 || *limit > 500 {
		return usageError{msg: "--limit must be 1 to 500", cmd: "history"}
	}
	return r.withClient(ctx, func(ctx context.Context, c *client.Client) error {
		// --after 0 means the very first page, which only forward asks for.
		q := client.HistoryQuery{AfterSeq: *after, BeforeSeq: *before, Limit: int32(*limit), Forward: afterSet}
		page, err := c.History(ctx, pos[0], q)
		if err != nil {
			return err
		}
		for _, m := range page.GetMessages() {
			r.printMessage(m)
		}
		if page.GetHasMore() && len(page.GetMessages()) > 0 {
			msgs := page.GetMessages()
			if afterSet {
				fmt.Fprintf(r.stderr, "(more: --after %d)\n", msgs[len(msgs)-1].GetSeq())
			} else {
				fmt.Fprintf(r.stderr, "(more: --before %d)\n", msgs[0].GetSeq())
			}
		}
		return nil
	})
}

func (r *runner) conversations(ctx context.Context, fs *flag.FlagSet, args []string) error {
	if _, err := r.parse(fs, args, 0, 0); err != nil {
		return err
	}
	return r.withClient(ctx, func(ctx context.Context, c *client.Client) error {
		list, err := c.ListConversations(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CONVERSATION\tKIND\tHEAD\tUNREAD\tTITLE\tLAST MESSAGE")
		for _, cv := range list {
			last := ""
			if m := cv.GetLastMessage(); m != nil {
				last = m.GetSenderId() + ": " + oneLine(summary(m), 60)
			}
			unread := fmt.Sprint(cv.GetUnreadCount())
			if cv.GetUnreadCount() >= 1000 {
				unread = "1000+" // the server stops counting there
			}
			fmt.Fprintf(tw, "%s\t%s\t#%d\t%s\t%s\t%s\n", cv.GetId(), kindName(cv.GetKind()), cv.GetHeadSeq(), unread, cv.GetTitle(), last)
		}
		return tw.Flush()
	})
}

// parseSeq reads a seq as typed: "12" or "#12".
func parseSeq(s, cmd string) (uint64, error) {
	seq, err := strconv.ParseUint(strings.TrimPrefix(s, "#"), 10, 64)
	if err != nil || seq == 0 {
		return 0, usageError{msg: fmt.Sprintf("%q is not a seq (a positive number, as history shows it)", s), cmd: cmd}
	}
	return seq, nil
}

func (r *runner) read(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pos, err := r.parse(fs, args, 1, 2)
	if err != nil {
		return err
	}
	var seq uint64
	if len(pos) == 2 {
		if seq, err = parseSeq(pos[1], "read"); err != nil {
			return err
		}
	}
	return r.withClient(ctx, func(ctx context.Context, c *client.Client) error {
		if seq == 0 {
			cv, err := c.GetConversation(ctx, pos[0])
			if err != nil {
				return err
			}
			if seq = cv.GetHeadSeq(); seq == 0 {
				fmt.Fprintf(r.stdout, "nothing to read in %s\n", pos[0])
				return nil
			}
		}
		rc, err := c.MarkRead(ctx, pos[0], seq)
		if err != nil {
			return err
		}
		fmt.Fprintf(r.stdout, "read [%s] up to #%d\n", pos[0], rc.GetReadSeq())
		return nil
	})
}

func (r *runner) edit(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pos, err := r.parse(fs, args, 3, -1)
	if err != nil {
		return err
	}
	seq, err := parseSeq(pos[1], "edit")
	if err != nil {
		return err
	}
	body := strings.Join(pos[2:], " ")
	if body == "" {
		return usageError{msg: "empty message (to remove a message, use 'parley delete')", cmd: "edit"}
	}
	return r.withClient(ctx, func(ctx context.Context, c *client.Client) error {
		ack, err := c.Edit(ctx, pos[0], seq, body)
		if err != nil {
			return err
		}
		fmt.Fprintf(r.stdout, "edited [%s #%d] (#%d)\n", pos[0], seq, ack.GetSeq())
		return nil
	})
}

func (r *runner) deleteMessage(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pos, err := r.parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	seq, err := parseSeq(pos[1], "delete")
	if err != nil {
		return err
	}
	return r.withClient(ctx, func(ctx context.Context, c *client.Client) error {
		ack, err := c.Delete(ctx, pos[0], seq)
		if err != nil {
			return err
		}
		fmt.Fprintf(r.stdout, "deleted [%s #%d] (#%d)\n", pos[0], seq, ack.GetSeq())
		return nil
	})
}

func (r *runner) dm(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return r.printConversation(ctx, func(ctx context.Context, c *client.Client) (*parleyv1.Conversation, error) {
		return c.CreateDirect(ctx, pos[0])
	})
}

func (r *runner) roomCreate(ctx context.Context, fs *flag.FlagSet, args []string) error {
	title := fs.String("title", "", "`title` shown to people (default the name)")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(pos[0], "room:")
	return r.printConversation(ctx, func(ctx context.Context, c *client.Client) (*parleyv1.Conversation, error) {
		return c.CreateRoom(ctx, name, *title)
	})
}

func (r *runner) roomJoin(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	id := pos[0]
	if !strings.HasPrefix(id, "room:") {
		id = client.RoomID(id)
	}
	return r.printConversation(ctx, func(ctx context.Context, c *client.Client) (*parleyv1.Conversation, error) {
		return c.JoinRoom(ctx, id)
	})
}

func (r *runner) groupCreate(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pos, err := r.parse(fs, args, 1, -1)
	if err != nil {
		return err
	}
	return r.printConversation(ctx, func(ctx context.Context, c *client.Client) (*parleyv1.Conversation, error) {
		return c.CreateGroup(ctx, pos[0], pos[1:]...)
	})
}

func (r *runner) groupAdd(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pos, err := r.parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	return r.printMembers(ctx, func(ctx context.Context, c *client.Client) (*parleyv1.Conversation, error) {
		return c.AddMember(ctx, pos[0], pos[1])
	})
}

func (r *runner) groupRemove(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pos, err := r.parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	return r.printMembers(ctx, func(ctx context.Context, c *client.Client) (*parleyv1.Conversation, error) {
		return c.RemoveMember(ctx, pos[0], pos[1])
	})
}

func (r *runner) leave(ctx context.Context, fs *flag.FlagSet, args []string) error {
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	return r.withClient(ctx, func(ctx context.Context, c *client.Client) error {
		if err := c.LeaveConversation(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(r.stdout, "left %s\n", pos[0])
		return nil
	})
}

// withClient dials with the saved login and runs do in one call's time.
func (r *runner) withClient(ctx context.Context, do func(context.Context, *client.Client) error) error {
	c, _, err := r.dial(ctx, true)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := r.call(ctx)
	defer cancel()
	return do(ctx, c)
}

// withConversation makes one call that returns a conversation.
func (r *runner) withConversation(ctx context.Context, do func(context.Context, *client.Client) (*parleyv1.Conversation, error)) (cv *parleyv1.Conversation, err error) {
	err = r.withClient(ctx, func(ctx context.Context, c *client.Client) error {
		cv, err = do(ctx, c)
		return err
	})
	return cv, err
}

// printConversation prints the id alone, so that scripts can capture it.
func (r *runner) printConversation(ctx context.Context, do func(context.Context, *client.Client) (*parleyv1.Conversation, error)) error {
	cv, err := r.withConversation(ctx, do)
	if err != nil {
		return err
	}
	fmt.Fprintln(r.stdout, cv.GetId())
	return nil
}

func (r *runner) printMembers(ctx context.Context, do func(context.Context, *client.Client) (*parleyv1.Conversation, error)) error {
	cv, err := r.withConversation(ctx, do)
	if err != nil {
		return err
	}
	fmt.Fprintf(r.stdout, "%s members: %s\n", cv.GetId(), strings.Join(cv.GetMemberIds(), " "))
	return nil
}

// printMessage prints one message in the format every command shares:
//
//	[room:lobby #3] alice: hello (edited)
//	  attachment 9f86d0…08 notes.txt (1234 bytes, text/plain)
//	[room:lobby #4] alice edited #3: hello
//	[room:lobby #5] alice deleted #2
//
// A deleted post shows as "(deleted)". The whole message is written at
// once, so that lines from listen's goroutines never interleave with it.
func (r *runner) printMessage(m *parleyv1.Message) {
	var b strings.Builder
	head := fmt.Sprintf("[%s #%d] %s", m.GetConversationId(), m.GetSeq(), m.GetSenderId())
	switch m.GetKind() {
	case parleyv1.MessageKind_MESSAGE_KIND_EDIT:
		fmt.Fprintf(&b, "%s edited #%d: %s\n", head, m.GetTargetSeq(), m.GetBody())
	case parleyv1.MessageKind_MESSAGE_KIND_DELETE:
		fmt.Fprintf(&b, "%s deleted #%d\n", head, m.GetTargetSeq())
	default:
		text := m.GetBody()
		switch {
		case m.GetDeleted():
			text = "(deleted)"
		case m.GetEditedAt() != nil:
			text += " (edited)"
		}
		if text == "" {
			fmt.Fprintf(&b, "%s:\n", head)
		} else {
			fmt.Fprintf(&b, "%s: %s\n", head, text)
		}
		for _, a := range m.GetAttachments() {
			fmt.Fprintf(&b, "  attachment %s %s (%d bytes, %s)\n", a.GetId(), a.GetName(), a.GetSize(), a.GetContentType())
		}
	}
	io.WriteString(r.stdout, b.String())
}

// summary is a message's text for one table cell.
func summary(m *parleyv1.Message) string {
	switch {
	case m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_EDIT:
		return fmt.Sprintf("(edited #%d) %s", m.GetTargetSeq(), m.GetBody())
	case m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_DELETE:
		return fmt.Sprintf("(deleted #%d)", m.GetTargetSeq())
	case m.GetDeleted():
		return "(deleted)"
	case m.GetBody() == "" && len(m.GetAttachments()) > 0:
		return "(" + m.GetAttachments()[0].GetName() + ")"
	}
	return m.GetBody()
}

func kindName(k parleyv1.ConversationKind) string {
	switch k {
	case parleyv1.ConversationKind_CONVERSATION_KIND_DIRECT:
		return "direct"
	case parleyv1.ConversationKind_CONVERSATION_KIND_ROOM:
		return "room"
	case parleyv1.ConversationKind_CONVERSATION_KIND_GROUP:
		return "group"
	}
	return "?"
}

// oneLine shortens a body for a table cell.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "\u2026"
	}
	return s
}
