package server

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/avonzt/avon/core/adminapi"
	"github.com/avonzt/avon/core/oauth"
)

// The operator user routes (local users of operator login). On the admin
// socket they are the break-glass path, authenticated by the kernel.

// PasswordRequest is the body of PUT /v1/users/{name}/password.
type PasswordRequest struct {
	Password string `json:"password"`
}

// RolesRequest is the body of PUT /v1/users/{name}/roles.
type RolesRequest struct {
	Roles []string `json:"roles"`
}

// UserChange is what the password, TOTP-disable and delete routes answer.
type UserChange struct {
	User            string `json:"user"`
	PasswordChanged bool   `json:"password_changed,omitempty"`
	TOTP            *bool  `json:"totp,omitempty"`
	Deleted         bool   `json:"deleted,omitempty"`
}

func (s *Server) userRoutes() []adminapi.Route {
	return []adminapi.Route{
		{Method: "GET", Pattern: "/v1/users", Scope: adminapi.ScopeRead, OperationID: "listUsers",
			Summary: "Operator users (never their password hashes)", Response: []oauth.UserInfo{}, Handler: s.adminListUsers},
		{Method: "POST", Pattern: "/v1/users", Scope: adminapi.ScopeWrite, OperationID: "addUser", Summary: "Add an operator user",
			Request: UserRequest{}, Response: oauth.UserInfo{}, Audit: "user.add", Target: "user", MaxBody: 8192, Handler: s.adminAddUser},
		{Method: "PUT", Pattern: "/v1/users/{name}/password", Scope: adminapi.ScopeWrite, OperationID: "setUserPassword",
			Summary: "Set a user's password", Request: PasswordRequest{}, Response: UserChange{}, Audit: "user.passwd", Target: "user/{name}",
			MaxBody: 8192, Handler: s.adminSetPassword},
		{Method: "PUT", Pattern: "/v1/users/{name}/roles", Scope: adminapi.ScopeWrite, OperationID: "setUserRoles",
			Summary: "Set a user's roles", Request: RolesRequest{}, Response: oauth.UserInfo{}, Audit: "user.roles", Target: "user/{name}",
			MaxBody: 8192, Handler: s.adminSetRoles},
		{Method: "POST", Pattern: "/v1/users/{name}/totp", Scope: adminapi.ScopeWrite, OperationID: "enableUserTOTP",
			Summary: "Enable TOTP for a user; the secret is shown once", Response: TOTPResult{}, Audit: "user.totp.enable", Target: "user/{name}",
			Handler: s.adminEnableTOTP},
		{Method: "DELETE", Pattern: "/v1/users/{name}/totp", Scope: adminapi.ScopeWrite, OperationID: "disableUserTOTP",
			Summary: "Disable TOTP for a user", Response: UserChange{}, Audit: "user.totp.disable", Target: "user/{name}", Handler: s.adminDisableTOTP},
		{Method: "DELETE", Pattern: "/v1/users/{name}", Scope: adminapi.ScopeWrite, OperationID: "deleteUser",
			Summary: "Delete a user", Response: UserChange{}, Audit: "user.delete", Target: "user/{name}", Handler: s.adminDeleteUser},
	}
}

// users returns operator login's users, or a 503 problem when login is off.
func (s *Server) users() (*oauth.Users, error) {
	o := s.OAuth()
	if o == nil {
		return nil, adminapi.NewProblem(adminapi.TypeUnavailable, "operator login is off (auth { enabled = false }, or no kms plugin)")
	}
	return o.Users(), nil
}

// userProblem maps the errors of the user and API token stores onto
// problems.
func userProblem(err error) error {
	var p *adminapi.Problem
	switch {
	case err == nil || errors.As(err, &p):
		return err
	case errors.Is(err, oauth.ErrInvalidArgument):
		return adminapi.Wrap(adminapi.TypeBadRequest, err)
	case errors.Is(err, oauth.ErrUnknownUser), errors.Is(err, oauth.ErrUnknownToken):
		return adminapi.Wrap(adminapi.TypeNotFound, err)
	case errors.Is(err, oauth.ErrUserExists):
		return adminapi.Wrap(adminapi.TypeConflict, err)
	case errors.Is(err, oauth.ErrNoTime), errors.Is(err, oauth.ErrUnavailable):
		return adminapi.Wrap(adminapi.TypeUnavailable, err)
	}
	return err
}

// userCall runs do with the users and a bounded context, and answers its
// result or its error as a problem.
func (s *Server) userCall(w http.ResponseWriter, r *adminapi.Request, do func(ctx context.Context, u *oauth.Users) (any, error)) error {
	u, err := s.users()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	out, err := do(ctx, u)
	if err != nil {
		return userProblem(err)
	}
	if name := r.PathValue("name"); name != "" {
		s.log.Info("user changed", "action", r.Route().Audit, "user", name, "by", r.Principal.Actor)
	}
	adminapi.JSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) adminListUsers(w http.ResponseWriter, r *adminapi.Request) error {
	return s.userCall(w, r, func(ctx context.Context, u *oauth.Users) (any, error) { return u.List(ctx) })
}

func (s *Server) adminAddUser(w http.ResponseWriter, r *adminapi.Request) error {
	var body UserRequest
	if err := r.Decode(&body); err != nil {
		return err
	}
	r.AuditField("user", body.Name)
	r.AuditField("roles", strings.Join(body.Roles, " "))
	return s.userCall(w, r, func(ctx context.Context, u *oauth.Users) (any, error) {
		return u.Add(ctx, body.Name, body.Password, body.Roles, r.Principal.Actor)
	})
}

func (s *Server) adminSetPassword(w http.ResponseWriter, r *adminapi.Request) error {
	var body PasswordRequest
	if err := r.Decode(&body); err != nil {
		return err
	}
	name := r.PathValue("name")
	return s.userCall(w, r, func(ctx context.Context, u *oauth.Users) (any, error) {
		return UserChange{User: name, PasswordChanged: true}, u.SetPassword(ctx, name, body.Password)
	})
}

func (s *Server) adminSetRoles(w http.ResponseWriter, r *adminapi.Request) error {
	var body RolesRequest
	if err := r.Decode(&body); err != nil {
		return err
	}
	name := r.PathValue("name")
	r.AuditField("roles", strings.Join(body.Roles, " "))
	return s.userCall(w, r, func(ctx context.Context, u *oauth.Users) (any, error) {
		if err := u.SetRoles(ctx, name, body.Roles); err != nil {
			return nil, err
		}
		return u.Get(ctx, name)
	})
}

func (s *Server) adminEnableTOTP(w http.ResponseWriter, r *adminapi.Request) error {
	name := r.PathValue("name")
	return s.userCall(w, r, func(ctx context.Context, u *oauth.Users) (any, error) {
		secret, err := u.EnableTOTP(ctx, name)
		if err != nil {
			return nil, err
		}
		return TOTPResult{User: name, Secret: oauth.EncodeTOTPSecret(secret), URI: oauth.TOTPURI("AVON", name, secret)}, nil
	})
}

func (s *Server) adminDisableTOTP(w http.ResponseWriter, r *adminapi.Request) error {
	name := r.PathValue("name")
	off := false
	return s.userCall(w, r, func(ctx context.Context, u *oauth.Users) (any, error) {
		return UserChange{User: name, TOTP: &off}, u.DisableTOTP(ctx, name)
	})
}

func (s *Server) adminDeleteUser(w http.ResponseWriter, r *adminapi.Request) error {
	name := r.PathValue("name")
	return s.userCall(w, r, func(ctx context.Context, u *oauth.Users) (any, error) {
		return UserChange{User: name, Deleted: true}, u.Delete(ctx, name)
	})
}
