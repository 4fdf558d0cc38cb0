// Command parley is the command line client of the Parley chat server. Run
// "parley help" for its commands; the work is done in package cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/parleychat/parley/client/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.Env{
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Getenv: os.Getenv,
	})
	stop()
	os.Exit(code)
}
