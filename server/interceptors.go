package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/store"
)

// public lists the services callable without a token: account creation and
// login, and the standard health and reflection services.
var public = []string{"parley.v1.AuthService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}

func needsToken(_ context.Context, c interceptors.CallMeta) bool {
	for _, svc := range public {
		if c.Service == svc {
			return false
		}
	}
	return true
}

// authenticate verifies the bearer token and, for tokens this server
// issued, that their user still exists and was not deleted: a token
// outlives a deleted account or a wiped data dir, and must not outlive it
// here.
func authenticate(a *auth.Authenticator, users interface {
	User(id string) (store.User, error)
}) grpcauth.AuthFunc {
	verify := a.GRPCAuthFunc()
	return func(ctx context.Context) (context.Context, error) {
		ctx, err := verify(ctx)
		if err != nil {
			return nil, err
		}
		c, _ := auth.FromContext(ctx)
		if c.Issuer != a.Issuer() {
			return ctx, nil // external users are known to their issuer, not to us
		}
		u, err := users.User(c.UserID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil, status.Error(codes.Unauthenticated, "the token's user does not exist here: register or log in again")
		case err != nil:
			return nil, status.Error(codes.Unavailable, "cannot check the token's user right now; try again")
		case u.Deleted():
			return nil, status.Error(codes.Unauthenticated, "the token's account was deleted")
		}
		return ctx, nil
	}
}

func slogLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// levels keeps successful calls and client mistakes out of the default log.
func levels(code codes.Code) logging.Level {
	switch code {
	case codes.OK, codes.Canceled, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists,
		codes.Unauthenticated, codes.PermissionDenied, codes.FailedPrecondition:
		return logging.LevelDebug
	case codes.ResourceExhausted, codes.Unavailable, codes.DeadlineExceeded:
		return logging.LevelInfo
	default:
		return logging.LevelError
	}
}

func recoverPanic(l *slog.Logger) recovery.Option {
	return recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		l.ErrorContext(ctx, "panic in handler", "panic", p, "stack", strings.ReplaceAll(string(debug.Stack()), "\n\t", " "))
		return status.Error(codes.Internal, "internal error; the server logged the details")
	})
}

// validator checks a request's shape; chat.Service.Validate is one.
type validator func(req any) error

func (v validator) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := v(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// stream validates the request of server-streaming RPCs. Client-streaming
// ones (Chat) validate each frame themselves, because a bad frame must get
// an error frame, not end the stream.
func (v validator) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.IsClientStream {
		return handler(srv, ss)
	}
	return handler(srv, validatedStream{ss, v})
}

type validatedStream struct {
	grpc.ServerStream
	v validator
}

func (s validatedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.v(m)
}

// The chains run outermost first: recovery catches panics anywhere below,
// logging sees the final status, auth runs before validation, so that
// callers without a token learn nothing about what shape is expected.
func unaryInterceptors(l *slog.Logger, a grpcauth.AuthFunc, v validator) []grpc.UnaryServerInterceptor {
	return []grpc.UnaryServerInterceptor{
		recovery.UnaryServerInterceptor(recoverPanic(l)),
		logging.UnaryServerInterceptor(slogLogger(l), logging.WithLevels(levels), logging.WithLogOnEvents(logging.FinishCall)),
		selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(a), selector.MatchFunc(needsToken)),
		v.unary,
	}
}

func streamInterceptors(l *slog.Logger, a grpcauth.AuthFunc, v validator) []grpc.StreamServerInterceptor {
	return []grpc.StreamServerInterceptor{
		recovery.StreamServerInterceptor(recoverPanic(l)),
		logStreams(l),
		selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(a), selector.MatchFunc(needsToken)),
		v.stream,
	}
}

// logStreams logs each stream's end as the logging interceptor logs unary
// calls, but without wrapping the stream: the library's wrapper reads the
// clock twice around every message for per-message events this server
// does not log, which on a busy room was a tenth of the server's CPU.
func logStreams(l *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		code := status.Code(err)
		service, method, _ := strings.Cut(strings.TrimPrefix(info.FullMethod, "/"), "/")
		attrs := []any{"protocol", "grpc", "grpc.component", "server", "grpc.service", service, "grpc.method", method,
			"grpc.code", code.String(), "grpc.time_ms", fmt.Sprintf("%.3f", float64(time.Since(start))/float64(time.Millisecond))}
		if err != nil {
			attrs = append(attrs, "grpc.error", err.Error())
		}
		l.Log(ss.Context(), slog.Level(levels(code)), "finished call", attrs...)
		return err
	}
}
