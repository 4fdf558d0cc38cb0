// Command parleyd is the Parley chat server: native gRPC, grpc-web and the
// web app on one port, messages in memory, a bbolt log behind them.
package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parleychat/parley/client/web"
	"github.com/parleychat/parley/server"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "parleyd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("parleyd", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: parleyd [flags]\n\nParley chat server. Every flag can also be set by an environment variable\nPARLEY_<FLAG> with dashes as underscores (e.g. PARLEY_DATA_DIR); flags win.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var cfg server.Config
	var signingKey, cors, logLevel string
	var window uint64
	fs.StringVar(&cfg.Addr, "addr", ":8080", "listen address for gRPC, grpc-web and HTTP (one port)")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "directory of the bbolt log and the signing key (unused with --nats)")
	fs.StringVar(&cfg.NATSURL, "nats", "", "cluster mode: NATS JetStream URLs, comma-separated (e.g. nats://n1:4222,nats://n2:4222); the node then keeps no state of its own")
	fs.IntVar(&cfg.NATSReplicas, "nats-replicas", 3, "cluster mode: replicas of the JetStream stream and buckets this node creates if they do not exist")
	fs.IntVar(&cfg.BatchSize, "batch-size", 4096, "most messages committed in one journal transaction (group commit; a commit takes what is queued, up to this)")
	fs.DurationVar(&cfg.FlushInterval, "flush-interval", 2*time.Millisecond, "how long a journal commit waits for more messages when the last commit ended less than that long ago; after a quiet spell a message is committed at once (0: never wait; what arrives during a commit makes the next batch)")
	fs.BoolVar(&cfg.NoSync, "no-sync", false, "turn fsync off: for benchmarks only, a crash then loses acknowledged messages")
	fs.Uint64Var(&window, "window", 4096, "how many seqs sequencing may run ahead of the disk; after a crash seqs resume past head+window")
	fs.IntVar(&cfg.Tail, "tail", 256, "committed messages per conversation kept in memory for catch-up")
	fs.DurationVar(&cfg.Pacing, "pacing", 250*time.Millisecond, "longest a send into a saturated conversation (most subscribers backlogged but draining) waits for the fan-out; 0: never wait, only cut slow consumers")
	fs.IntVar(&cfg.Queue, "queue", 1024, "frames queued per stream before it is cut as a slow consumer")
	fs.IntVar(&cfg.MaxBody, "max-body", 16<<10, "largest message body in bytes")
	fs.IntVar(&cfg.MaxAttachment, "max-attachment", 8<<20, "largest attachment in bytes (uploads are one gRPC message of up to this plus 64 KiB)")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", 15*time.Second, "interval of heartbeats on Subscribe streams")
	fs.Float64Var(&cfg.SendRate, "send-rate", 100, "messages per second each user may send, in bursts of twice that (0: no limit)")
	fs.Float64Var(&cfg.TypingRate, "typing-rate", 4, "typing updates per second each user may send (0: no limit)")
	fs.IntVar(&cfg.MaxStreams, "max-streams", 16, "streams one user may have open at once")
	fs.DurationVar(&cfg.TypingTTL, "typing-ttl", 6*time.Second, "how long a typing indicator lasts unless renewed")
	fs.StringVar(&cfg.WebhookURL, "webhook-url", "", "URL POSTed (JSON) for each post to members with no live stream, for push notifications")
	fs.StringVar(&cfg.WebhookSecret, "webhook-secret", "", "HMAC-SHA256 key signing webhook bodies (X-Parley-Signature header)")
	fs.DurationVar(&cfg.PresenceGrace, "presence-grace", 3*time.Second, "how long after a user's last stream closes they are shown offline")
	fs.IntVar(&cfg.PresenceFanout, "presence-fanout", 1000, "most members a conversation may have for its members to be pushed each other's presence changes; in bigger rooms clients ask GetPresence (0: no cap)")
	fs.StringVar(&signingKey, "jwt-key", "", "hex HS256 signing key (at least 32 bytes); empty: generated once and kept in the data dir (with --nats: in the cluster, shared by every node)")
	fs.DurationVar(&cfg.TokenTTL, "token-ttl", 24*time.Hour, "lifetime of issued access tokens")
	fs.StringVar(&cfg.ExternalIssuer, "jwt-external-issuer", "", "iss claim of an external token issuer whose tokens are accepted")
	fs.StringVar(&cfg.ExternalKeyFile, "jwt-external-key", "", "PEM public key (RSA, ECDSA or Ed25519) of the external issuer")
	fs.IntVar(&cfg.BcryptCost, "bcrypt-cost", 0, "bcrypt cost for new passwords (0: bcrypt's default)")
	fs.StringVar(&cors, "cors-origins", "", "comma-separated origins allowed to call grpc-web cross-site (\"*\" for any)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful stop may take before connections are cut")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve Go profiles under /debug/pprof/ on the HTTP side")
	if err := envDefaults(fs); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.PresenceFanout == 0 {
		cfg.PresenceFanout = -1 // the flag's 0 is "no cap"
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = -1 // as with pacing: the flag's 0 is "off"
	}
	if cfg.Pacing == 0 {
		cfg.Pacing = -1 // the flag's 0 is "off"; Config's 0 is "default"
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Window = window
	if signingKey != "" {
		key, err := hex.DecodeString(signingKey)
		if err != nil {
			return fmt.Errorf("--jwt-key: not hex: %w", err)
		}
		cfg.SigningKey = key
	}
	if cors != "" {
		cfg.CORSOrigins = strings.Split(cors, ",")
	}
	cfg.Web = web.Assets()

	// Signals are caught before the server says it is listening, so that a
	// SIGTERM right after that is a graceful stop, not the default death.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		srv.Shutdown(context.Background())
		return err
	}
	<-ctx.Done()
	stop()
	cfg.Logger.Info("shutting down")
	return srv.Shutdown(context.Background())
}

// envDefaults sets each flag from PARLEY_<NAME> when that variable is set.
func envDefaults(fs *flag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := "PARLEY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%s: %w", name, strconv.Quote(v), e)
			}
		}
		f.Usage += fmt.Sprintf(" [$%s]", name)
	})
	return err
}
