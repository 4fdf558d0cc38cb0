package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
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
	pos, err := r.parse(fs, args, 2, -1)
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
	if body == "" {
		return usageError{msg: "empty message", cmd: "send"}
	}
	c, _, err := r.dial(ctx, true)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := r.call(ctx)
	defer cancel()
	ack, err := c.Send(ctx, pos[0], body)
	if err != nil {
		return err
	}
	fmt.Fprintf(r.stdout, "sent [%s #%d]\n", ack.GetConversationId(), ack.GetSeq())
	return nil
}

func (r *runner) history(ctx context.Context, fs *flag.FlagSet, args []string) error {
	before := fs.Uint64("before", 0, "show the newest messages with seq below `N`")
	after := fs.Uint64("after", 0, "show the oldest messages with seq above `N`")
	limit := fs.Int("limit", 50, "at most `N` messages (1 to 500)")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *before != 0 && *after != 0 {
		return usageError{msg: "set at most one of --before and --after", cmd: "history"}
	}
	if *limit < 1 || *limit > 500 {
		return usageError{msg: "--limit must be 1 to 500", cmd: "history"}
	}
	c, _, err := r.dial(ctx, true)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := r.call(ctx)
	defer cancel()
	page, err := c.History(ctx, pos[0], client.HistoryQuery{AfterSeq: *after, BeforeSeq: *before, Limit: int32(*limit)})
	if err != nil {
		return err
	}
	for _, m := range page.GetMessages() {
		r.printMessage(m)
	}
	if page.GetHasMore() && len(page.GetMessages()) > 0 {
		msgs := page.GetMessages()
		if *after != 0 {
			fmt.Fprintf(r.stderr, "(more: --after %d)\n", msgs[len(msgs)-1].GetSeq())
		} else {
			fmt.Fprintf(r.stderr, "(more: --before %d)\n", msgs[0].GetSeq())
		}
	}
	return nil
}

func (r *runner) conversations(ctx context.Context, fs *flag.FlagSet, args []string) error {
	if _, err := r.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, _, err := r.dial(ctx, true)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := r.call(ctx)
	defer cancel()
	list, err := c.ListConversations(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(r.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONVERSATION\tKIND\tHEAD\tTITLE\tLAST MESSAGE")
	for _, cv := range list {
		last := ""
		if m := cv.GetLastMessage(); m != nil {
			last = m.GetSenderId() + ": " + oneLine(m.GetBody(), 60)
		}
		fmt.Fprintf(tw, "%s\t%s\t#%d\t%s\t%s\n", cv.GetId(), kindName(cv.GetKind()), cv.GetHeadSeq(), cv.GetTitle(), last)
	}
	return tw.Flush()
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
	c, _, err := r.dial(ctx, true)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := r.call(ctx)
	defer cancel()
	if err := c.LeaveConversation(ctx, pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(r.stdout, "left %s\n", pos[0])
	return nil
}

// withConversation makes one call that returns a conversation.
func (r *runner) withConversation(ctx context.Context, do func(context.Context, *client.Client) (*parleyv1.Conversation, error)) (*parleyv1.Conversation, error) {
	c, _, err := r.dial(ctx, true)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := r.call(ctx)
	defer cancel()
	return do(ctx, c)
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

// printMessage prints one message in the format every command shares.
func (r *runner) printMessage(m *parleyv1.Message) {
	fmt.Fprintf(r.stdout, "[%s #%d] %s: %s\n", m.GetConversationId(), m.GetSeq(), m.GetSenderId(), m.GetBody())
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
