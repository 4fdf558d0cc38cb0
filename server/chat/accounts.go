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
	u, err := s.credentials(req.GetUsername(), req.GetPassword())
	if err != nil {
		return nil, toStatus(err)
	}
	tok, err := s.token(u.ID)
	if err != nil {
		return nil, toStatus(err)
	}
	return &parleyv1.LoginResponse{UserId: u.ID, Token: tok}, nil
}

// credentials returns the account that username and password open. A
// wrong username, a deleted account and a wrong password fail alike, in
// about the same time, so that usernames cannot be probed.
func (s *Service) credentials(username, password string) (store.User, error) {
	wrong := fmt.Errorf("%w: wrong username or password", errUnauth)
	u, err := s.store.User(username)
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && u.Deleted()):
		auth.CheckPassword(dummyHash, password)
		return store.User{}, wrong
	case err != nil:
		return store.User{}, err
	}
	if err := auth.CheckPassword(u.PasswordHash, password); err != nil {
		return store.User{}, wrong
	}
	return u, nil
}

// DeleteAccount implements parleyv1.AuthServiceServer. The user leaves
// their rooms and groups first and is marked deleted last, so that a
// failure on the way leaves an account that can log in and try again.
func (s *Service) DeleteAccount(ctx context.Context, req *parleyv1.DeleteAccountRequest) (*parleyv1.DeleteAccountResponse, error) {
	u, err := s.credentials(req.GetUsername(), req.GetPassword())
	if err != nil {
		return nil, toStatus(err)
	}
	convs, err := s.store.UserConversations(u.ID)
	if err != nil {
		return nil, toStatus(err)
	}
	for _, id := range convs {
		_, err := s.updateConversation(id, func(c *store.Conversation) error {
			if c.Kind == store.KindDirect || !c.IsMember(u.ID) {
				return errUnchanged
			}
			leave(c, u.ID)
			return nil
		})
		if err != nil && !errors.Is(err, errUnchanged) && !errors.Is(err, store.ErrNotFound) {
			return nil, toStatus(fmt.Errorf("leave %s: %w", id, err))
		}
	}
	if err := s.store.DeleteUser(u.ID, time.Now().UTC()); err != nil {
		return nil, toStatus(err)
	}
	s.hub.kick(u.ID)
	if s.opts.presenceBus != nil {
		s.opts.presenceBus.Deleted(u.ID)
	}
	return &parleyv1.DeleteAccountResponse{}, nil
}

// errUnchanged aborts a conversation update that has nothing to do.
var errUnchanged = errors.New("unchanged")

func (s *Service) token(user string) (*parleyv1.AccessToken, error) {
	v, exp, err := s.tokens.Issue(user)
	if err != nil {
		return nil, fmt.Errorf("issue token: %w", err)
	}
	return &parleyv1.AccessToken{Value: v, ExpiresAt: timestamppb.New(exp)}, nil
}
