// Package cli is the parley command line: it parses subcommands and their
// flags with the standard flag package, keeps the login in a config file
// and talks to the server through package client. cmd/parley only wires it
// to the process, so that everything here runs in tests.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/client"
)

// DefaultServer is the server used when neither --server, $PARLEY_SERVER
// nor a saved login names one.
const DefaultServer = "localhost:8080"

// Env is the outside world of one run: standard streams and environment.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads an environment variable; os.Getenv in production.
	Getenv func(string) string
}

// Run runs the parley command with args (without the program name) and
// returns the process exit code: 0 on success, 1 on any error, which it
// prints to Stderr as "parley: <gRPC code>: <message>". Long-running
// commands (listen, chat) return when ctx ends.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	r := &runner{
		stdin:   env.Stdin,
		stdout:  &lockedWriter{w: env.Stdout},
		stderr:  &lockedWriter{w: env.Stderr},
		getenv:  env.Getenv,
		timeout: 10 * time.Second,
	}
	err := r.main(ctx, args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	code, msg := describe(err)
	fmt.Fprintf(r.stderr, "parley: %s: %s\n", code, msg)
	return 1
}

// runner holds one run's streams and global settings.
type runner struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	server  string // --server; empty means resolve from env, config, default
	tls     bool
	tlsSet  bool // --tls was given, so it overrides the saved login's choice
	timeout time.Duration
}

// lockedWriter serialises writes from the goroutines of listen and chat so
// that lines never interleave.
type lockedWriter struct {
	mu sync.Mutex // protects w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// command is one subcommand.
type command struct {
	name    string // as typed, e.g. "room create"
	args    string // synopsis of the positional arguments
	summary string // one line for the command list
	help    string // paragraph for the command's --help
	run     func(r *runner, ctx context.Context, fs *flag.FlagSet, args []string) error
}

// commands lists every subcommand in the order the help shows them.
var commands = []*command{
	{name: "register", args: "<username>", run: (*runner).register,
		summary: "create an account and log in",
		help:    "Creates an account on the server and saves the login (server, user, token) in the config file.\nThe password comes from --password, $PARLEY_PASSWORD or a prompt on standard input."},
	{name: "login", args: "<username>", run: (*runner).login,
		summary: "log in and save the token",
		help:    "Logs in and saves the server, user and token in the config file for the other commands.\nThe password comes from --password, $PARLEY_PASSWORD or a prompt on standard input."},
	{name: "delete-account", args: "<username>", run: (*runner).deleteAccount,
		summary: "delete an account for good",
		help: "Deletes the account after checking its password: it leaves its rooms and groups, its tokens stop\n" +
			"working and its name stays taken; its messages stay in history. If it is the saved login, the token\n" +
			"is removed from the config file. The password comes from --password, $PARLEY_PASSWORD or a prompt."},
	{name: "logout", run: (*runner).logout,
		summary: "forget the saved token",
		help:    "Removes the saved user and token from the config file. The server stays the default."},
	{name: "send", args: "<conversation> [<text...>|-]", run: (*runner).send,
		summary: "send one message",
		help:    "Sends the words after the conversation as one message and prints its seq once the server has stored it.\nWith - as the text, the message is read from standard input. --file uploads a file and attaches it\n(repeat it for several); the text may then be left out. Each attachment's id is printed, for 'parley download'."},
	{name: "listen", args: "<conversation>...", run: (*runner).listen,
		summary: "print messages and what happens as they arrive",
		help: "Follows conversations live and prints each message as [conversation #seq] sender: body, edits and deletes\n" +
			"as they happen, and lines for receipts ([conversation] bob read up to #5), typing, who comes online or\n" +
			"goes offline, and new messages in your conversations that are not followed (notification [...]).\n" +
			"Reconnects and resumes by itself; stops on Ctrl-C."},
	{name: "history", args: "<conversation>", run: (*runner).history,
		summary: "print stored messages",
		help:    "Prints one page of stored messages, oldest first. Without --before or --after, the newest page;\n--after 0 pages from the very first message. Edited posts show their latest text, deleted ones a tombstone."},
	{name: "conversations", run: (*runner).conversations,
		summary: "list your conversations",
		help:    "Lists your conversations, newest activity first, with each one's head seq, how many messages from\nothers you have not read, and the last message."},
	{name: "read", args: "<conversation> [seq]", run: (*runner).read,
		summary: "mark a conversation read",
		help:    "Marks the conversation read up to seq (default: its newest message), which clears its unread count\nand shows the senders that you read their messages."},
	{name: "edit", args: "<conversation> <seq> <text...>", run: (*runner).edit,
		summary: "change the text of one of your messages",
		help:    "Replaces the text of your message at seq. Everyone following the conversation sees the edit; history\nshows the new text, marked (edited)."},
	{name: "delete", args: "<conversation> <seq>", run: (*runner).deleteMessage,
		summary: "delete one of your messages",
		help:    "Deletes your message at seq: history shows it as (deleted), and its text and attachments are gone."},
	{name: "download", args: "<attachment-id>", run: (*runner).download,
		summary: "download an attachment",
		help:    "Downloads a file sent in one of your conversations (or uploaded by you) and checks it against its id.\nWithout -o it is saved under its own name in the current directory, which must not exist yet; -o -\nwrites it to standard output. --timeout does not apply: a large file may take long; Ctrl-C stops it."},
	{name: "dm", args: "<user>", run: (*runner).dm,
		summary: "open a direct conversation",
		help:    "Returns the direct conversation with a user, creating it on first use, and prints its id."},
	{name: "room create", args: "<name>", run: (*runner).roomCreate,
		summary: "create a room anyone may join",
		help:    "Creates a room and prints its id (room:<name>)."},
	{name: "room join", args: "<name>", run: (*runner).roomJoin,
		summary: "join a room",
		help:    "Joins a room, by name or by id, and prints its id."},
	{name: "group create", args: "<title> <member>...", run: (*runner).groupCreate,
		summary: "create a closed group",
		help:    "Creates a group you own with the given members and prints its id."},
	{name: "group add", args: "<conversation> <user>", run: (*runner).groupAdd,
		summary: "add a member to your group",
		help:    "Adds a user to a group you own."},
	{name: "group remove", args: "<conversation> <user>", run: (*runner).groupRemove,
		summary: "remove a member from your group",
		help:    "Removes a user from a group you own."},
	{name: "leave", args: "<conversation>", run: (*runner).leave,
		summary: "leave a room or group",
		help:    "Removes you from a room or group. Direct conversations cannot be left."},
	{name: "chat", args: "<conversation>", run: (*runner).chat,
		summary: "chat interactively",
		help:    "Shows recent messages, then prints incoming ones live (with who is typing) and sends each line you\ntype. A line shows \u2713 #seq once the server has stored it. What is shown is marked read. End with\nCtrl-D or Ctrl-C."},
}

// main dispatches args to a subcommand.
func (r *runner) main(ctx context.Context, args []string) error {
	global := flag.NewFlagSet("parley", flag.ContinueOnError)
	r.globalFlags(global)
	global.SetOutput(io.Discard)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			r.printOverview(global)
		}
		return usageErr(err, "")
	}
	args = global.Args()
	if len(args) == 0 {
		r.printOverview(global)
		return usageError{msg: "no command given"}
	}
	if args[0] == "help" {
		if len(args) == 1 {
			r.printOverview(global)
			return nil
		}
		cmd, _ := lookup(args[1:])
		if cmd == nil {
			return usageError{msg: fmt.Sprintf("unknown command %q; run 'parley help' for the list", strings.Join(args[1:], " "))}
		}
		// The command defines its own flags, so let it print its help.
		return cmd.run(r, ctx, r.commandFlags(cmd), []string{"--help"})
	}
	cmd, rest := lookup(args)
	if cmd == nil {
		if subs := subcommands(args[0]); len(subs) > 0 {
			return usageError{msg: fmt.Sprintf("%q needs a subcommand: %s", args[0], strings.Join(subs, ", ")), cmd: ""}
		}
		return usageError{msg: fmt.Sprintf("unknown command %q; run 'parley help' for the list", strings.Join(args, " "))}
	}
	return cmd.run(r, ctx, r.commandFlags(cmd), rest)
}

// lookup finds the command named by the first one or two words of args.
func lookup(args []string) (*command, []string) {
	if len(args) == 0 {
		return nil, nil
	}
	if len(args) >= 2 {
		for _, c := range commands {
			if c.name == args[0]+" "+args[1] {
				return c, args[2:]
			}
		}
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c, args[1:]
		}
	}
	return nil, nil
}

// subcommands lists the second words of the commands whose first word is
// group, such as "create" and "join" for "room".
func subcommands(group string) []string {
	var subs []string
	for _, c := range commands {
		if first, second, ok := strings.Cut(c.name, " "); ok && first == group {
			subs = append(subs, second)
		}
	}
	return subs
}

// globalFlags defines the flags every command accepts, before or after its
// name. They are flag.Func so that defining them on a second FlagSet does
// not reset what the first one parsed.
func (r *runner) globalFlags(fs *flag.FlagSet) {
	fs.Func("server", "`host:port` of the server (default $PARLEY_SERVER, else the server of the saved login, else "+DefaultServer+")", func(v string) error {
		r.server = v
		return nil
	})
	fs.BoolFunc("tls", "connect with TLS using the system's roots (default: plaintext, or what the saved login used)", func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("invalid boolean %q", v)
		}
		r.tls, r.tlsSet = b, true
		return nil
	})
	fs.Func("timeout", "`duration` to wait for each call to the server (default 10s)", func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("invalid duration %q", v)
		}
		r.timeout = d
		return nil
	})
}

func (r *runner) commandFlags(cmd *command) *flag.FlagSet {
	fs := flag.NewFlagSet("parley "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	r.globalFlags(fs)
	fs.Usage = func() { r.printUsage(cmd, fs) }
	return fs
}

// parse parses a command's flags, which may come before, between or after
// its positional arguments ("--" ends the flags), and checks the number of
// positional arguments: at least min, at most max (max < 0: no limit).
func (r *runner) parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		// On -h/--help, fs.Parse has already called fs.Usage.
		return nil, usageErr(err, strings.TrimPrefix(fs.Name(), "parley "))
	}
	name := strings.TrimPrefix(fs.Name(), "parley ")
	switch {
	case len(pos) < min:
		return nil, usageError{msg: "missing arguments", cmd: name}
	case max >= 0 && len(pos) > max:
		return nil, usageError{msg: fmt.Sprintf("unexpected argument %q", pos[max]), cmd: name}
	}
	return pos, nil
}

// parseInterspersed is fs.Parse that lets flags follow positional
// arguments, as people type them: "send room:x hello --server host".
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (r *runner) printOverview(global *flag.FlagSet) {
	w := r.stdout
	fmt.Fprintf(w, "parley is the command line client of the Parley chat server.\n\n")
	fmt.Fprintf(w, "Usage:\n  parley [global flags] <command> [flags] [arguments]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nGlobal flags (accepted by every command, before or after its name):\n")
	global.SetOutput(w)
	global.PrintDefaults()
	global.SetOutput(io.Discard)
	fmt.Fprintf(w, "\nEnvironment:\n")
	fmt.Fprintf(w, "  PARLEY_SERVER      server to use when --server is not given\n")
	fmt.Fprintf(w, "  PARLEY_PASSWORD    password for register and login\n")
	fmt.Fprintf(w, "  PARLEY_TOKEN       access token to use instead of the saved one\n")
	fmt.Fprintf(w, "  PARLEY_CONFIG_DIR  directory of config.json (default: parley under the user config directory)\n")
	fmt.Fprintf(w, "\nRun 'parley <command> --help' for a command's flags.\n")
}

func (r *runner) printUsage(cmd *command, fs *flag.FlagSet) {
	w := r.stdout
	fmt.Fprintf(w, "Usage: parley %s [flags]", cmd.name)
	if cmd.args != "" {
		fmt.Fprintf(w, " %s", cmd.args)
	}
	fmt.Fprintf(w, "\n\n%s\n\nFlags:\n", cmd.help)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// usageError is a mistake on the command line.
type usageError struct {
	msg string
	cmd string // the command whose --help explains it, if any
}

func (e usageError) Error() string {
	if e.cmd == "" {
		return e.msg
	}
	return fmt.Sprintf("%s (run 'parley %s --help')", e.msg, e.cmd)
}

func usageErr(err error, cmd string) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usageError{msg: err.Error(), cmd: cmd}
}

// localError is a failure found before or without the server, with the gRPC
// code that describes it best.
type localError struct {
	code codes.Code
	msg  string
}

func (e localError) Error() string { return e.msg }

var errNotLoggedIn = localError{codes.Unauthenticated, "not logged in: run 'parley login <username>' or 'parley register <username>'"}

// describe turns an error into the code and message that Run prints. For a
// server's error, the message is the server's own, without the wrapping
// this side added, because that is what a person can act on.
func describe(err error) (string, string) {
	var grpcErr interface{ GRPCStatus() *status.Status }
	var usage usageError
	var local localError
	switch {
	case errors.Is(err, client.ErrChecksum):
		return codeName(codes.DataLoss), err.Error()
	case errors.As(err, &usage):
		return codeName(codes.InvalidArgument), usage.Error()
	case errors.As(err, &local):
		return codeName(local.code), local.msg
	case errors.As(err, &grpcErr):
		st := grpcErr.GRPCStatus()
		return codeName(st.Code()), st.Message()
	case errors.Is(err, context.Canceled):
		return codeName(codes.Canceled), err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return codeName(codes.DeadlineExceeded), err.Error()
	}
	return codeName(codes.Unknown), err.Error()
}

// codeName is the canonical name of a gRPC code, as the protos and the
// server's documentation spell it.
func codeName(c codes.Code) string {
	names := [...]string{
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
		"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
		"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
	}
	if int(c) < len(names) {
		return names[c]
	}
	return fmt.Sprintf("CODE_%d", uint32(c))
}
