package chat

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/server/auth"
	"github.com/parleychat/parley/server/store"
)

// dummyHash is compared against when a username does not exist, so that a
// wrong username costs as much time as a wrong password.
var dummyHash, _ = auth.HashPassword("not-a-password", 0)

// Register implements parleyv1.AuthServiceServer.
func (s *Service) Register(ctx context.Context, req *parleyv1.RegisterRequest) (*parleyv1.RegisterResponse, error) {
	hash, err := auth.HashPassword(req.GetPassword(), s.opts.bcryptCost)
	if err != nil {
		return nil, toStatus(fmt.Errorf("hash password: %w", err))
	}
	u := store.User{ID: req.GetUsername(), DisplayName: req.GetDisplayName(), PasswordHash: hash, CreatedAt: time.Now().UTC()}
	if err := s.store.CreateUser(u); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, toStatus(fmt.Errorf("%w: username %q is taken", errExists, u.ID))
		}
		return nil, toStatus(err)
	}
	tok, err := s.token(u.ID)
	if err != nil {
		return nil, toStatus(err)
	}
	return &parleyv1.RegisterResponse{UserId: u.ID, Token: tok}, nil
}

// Login implements parleyv1.AuthServiceServer.
func (s *Service) Login(ctx context.Context, req *parleyv1.LoginRequest) (*parleyv1.LoginResponse, error) {
	wrong := fmt.Errorf("%w: wrong username or password", errUnauth)
	u, err := s.store.User(req.GetUsername())
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			auth.CheckPassword(dummyHash, req.GetPassword())
			return nil, toStatus(wrong)
		}
		return nil, toStatus(err)
	}
	if err := auth.CheckPassword(u.PasswordHash, req.GetPassword()); err != nil {
		return nil, toStatus(wrong)
	}
	tok, err := s.token(u.ID)
	if err != nil {
		return nil, toStatus(err)
	}
	return &parleyv1.LoginResponse{UserId: u.ID, Token: tok}, nil
}

func (s *Service) token(user string) (*parleyv1.AccessToken, error) {
	v, exp, err := s.tokens.Issue(user)
	if err != nil {
		return nil, fmt.Errorf("issue token: %w", err)
	}
	return &parleyv1.AccessToken{Value: v, ExpiresAt: timestamppb.New(exp)}, nil
}
