package chat

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/server/router"
	"github.com/parleychat/parley/server/store"
)

// Errors the handlers return; toStatus turns them into gRPC statuses. The
// codes are part of the API and documented in the protos.
var (
	errInvalid      = errors.New("invalid argument")
	errDenied       = errors.New("permission denied")
	errNotFound     = errors.New("not found")
	errExists       = errors.New("already exists")
	errPrecondition = errors.New("failed precondition")
	errExhausted    = errors.New("resource exhausted")
	errUnavailable  = errors.New("unavailable")
	errShutdown     = fmt.Errorf("%w: server is shutting down; reconnect and resume from your last seq", errUnavailable)
	errUnauth       = errors.New("unauthenticated")
)

// invalid builds an INVALID_ARGUMENT error with a message for a person.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalid, fmt.Sprintf(format, args...))
}

// denied is the answer to a conversation the caller may not use. It is the
// same whether or not the conversation exists, so ids cannot be probed.
func denied(conv string) error {
	return fmt.Errorf("%w: you are not a member of conversation %q (or it does not exist)", errDenied, conv)
}

// toStatus is the one place where errors become gRPC statuses.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, errInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, errDenied):
		code = codes.PermissionDenied
	case errors.Is(err, errNotFound), errors.Is(err, store.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, errExists), errors.Is(err, store.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, errPrecondition):
		code = codes.FailedPrecondition
	case errors.Is(err, errExhausted):
		code = codes.ResourceExhausted
	case errors.Is(err, errUnauth):
		code = codes.Unauthenticated
	case errors.Is(err, errUnavailable), errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrUnavailable), errors.Is(err, router.ErrClosed):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}
