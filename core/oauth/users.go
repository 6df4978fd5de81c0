package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/avonzt/avon/core/store"
)

// Roles an operator can hold; each is also the OAuth scope of the same
// name. admin entitles to every scope (see Scopes, HasScope).
const (
	RoleAdmin    = "admin"    // everything, including users and keys
	RoleOperator = "operator" // agents, sessions, policies, certificates
	RoleAuditor  = "auditor"  // read-only, and the audit log
)

// Roles lists the roles in order of power.
var Roles = []string{RoleAdmin, RoleOperator, RoleAuditor}

const userPrefix = "oauth/user/"

var userRE = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,63}$`)

// ValidUserName reports whether name is a valid user name: 1 to 64 of
// a-z 0-9 . _ -, starting with a letter.
func ValidUserName(name string) bool { return userRE.MatchString(name) }

// User is a local operator account as stored (under oauth/user/<name>).
type User struct {
	Name         string    `json:"name"`
	Roles        []string  `json:"roles"`
	PasswordHash string    `json:"password_hash"`
	TOTPSecret   []byte    `json:"totp_secret,omitempty"`
	TOTPLastStep uint64    `json:"totp_last_step,omitempty"`
	Disabled     bool      `json:"disabled,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	CreatedBy    string    `json:"created_by,omitempty"`
}

// UserInfo is what listings show of a user (no secrets).
type UserInfo struct {
	Name      string    `json:"name"`
	Roles     []string  `json:"roles"`
	TOTP      bool      `json:"totp"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// Info returns the public view of u.
func (u User) Info() UserInfo {
	return UserInfo{Name: u.Name, Roles: u.Roles, TOTP: len(u.TOTPSecret) > 0, Disabled: u.Disabled,
		CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, CreatedBy: u.CreatedBy}
}

// Users manages local users in the store and checks their credentials.
type Users struct {
	kv     store.KV
	rand   io.Reader
	now    func() (time.Time, error)
	params Argon2Params
	// dummy is a hash with the current parameters, verified for unknown
	// users so that a login costs the same whether or not the name
	// exists.
	dummy string
	// verify is VerifyPassword; tests wrap it to see the code path.
	verify func(encoded, password string) (bool, error)
	// hashing bounds the password checks running at once: each holds
	// Argon2's memory (64 MiB by default), so a flood of logins queues
	// here instead of exhausting the machine.
	hashing chan struct{}
}

// MaxConcurrentHashes is how many password checks run at once; more wait
// their turn (or their request's deadline).
var MaxConcurrentHashes = max(2, runtime.GOMAXPROCS(0))

// checkPassword runs one password check when a slot is free.
func (u *Users) checkPassword(ctx context.Context, encoded, password string) (bool, error) {
	select {
	case u.hashing <- struct{}{}:
	case <-ctx.Done():
		return false, fmt.Errorf("%w: waiting to check a password: %w", ErrUnavailable, ctx.Err())
	}
	defer func() { <-u.hashing }()
	return u.verify(encoded, password)
}

// NewUsers returns user operations over kv, with randomness from rand (the
// core DRBG), calibrated time from now, and new hashes made with params.
func NewUsers(kv store.KV, rand io.Reader, now func() (time.Time, error), params Argon2Params) (*Users, error) {
	if err := checkParams(params); err != nil {
		return nil, err
	}
	pw := make([]byte, 32)
	if _, err := io.ReadFull(rand, pw); err != nil {
		return nil, fmt.Errorf("oauth: randomness: %w", err)
	}
	dummy, err := HashPassword(string(pw), params, rand)
	if err != nil {
		return nil, err
	}
	return &Users{kv: kv, rand: rand, now: now, params: params, dummy: dummy, verify: VerifyPassword,
		hashing: make(chan struct{}, MaxConcurrentHashes)}, nil
}

func checkRoles(roles []string) ([]string, error) {
	if len(roles) == 0 {
		return nil, fmt.Errorf("%w: a user needs at least one role (%s)", ErrInvalidArgument, strings.Join(Roles, ", "))
	}
	out := []string{}
	for _, r := range roles {
		if !slices.Contains(Roles, r) {
			return nil, fmt.Errorf("%w: role %q; want %s", ErrInvalidArgument, r, strings.Join(Roles, ", "))
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return slices.Index(Roles, out[i]) < slices.Index(Roles, out[j]) })
	return out, nil
}

func (u *Users) trustedNow() (time.Time, error) {
	t, err := u.now()
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", ErrNoTime, err)
	}
	return t, nil
}

// Add creates a user with a password and roles.
func (u *Users) Add(ctx context.Context, name, password string, roles []string, by string) (UserInfo, error) {
	if !ValidUserName(name) {
		return UserInfo{}, fmt.Errorf("%w: user name %q: want 1 to 64 of a-z 0-9 . _ - starting with a letter", ErrInvalidArgument, name)
	}
	roles, err := checkRoles(roles)
	if err != nil {
		return UserInfo{}, err
	}
	if err := checkNewPassword(password); err != nil {
		return UserInfo{}, err
	}
	now, err := u.trustedNow()
	if err != nil {
		return UserInfo{}, err
	}
	h, err := HashPassword(password, u.params, u.rand)
	if err != nil {
		return UserInfo{}, err
	}
	rec := User{Name: name, Roles: roles, PasswordHash: h, CreatedAt: now.UTC(), UpdatedAt: now.UTC(), CreatedBy: by}
	b, _ := json.Marshal(rec)
	if _, err := u.kv.Put(ctx, userPrefix+name, b, store.PutOptions{Check: true}); err != nil {
		if errors.Is(err, store.ErrVersionConflict) {
			return UserInfo{}, fmt.Errorf("%w: %q", ErrUserExists, name)
		}
		return UserInfo{}, fmt.Errorf("%w: store user: %w", ErrUnavailable, err)
	}
	return rec.Info(), nil
}

// get reads a user record and its version.
func (u *Users) get(ctx context.Context, name string) (User, int64, error) {
	if !ValidUserName(name) {
		return User{}, 0, fmt.Errorf("%w: %q", ErrUnknownUser, name)
	}
	e, err := u.kv.Get(ctx, userPrefix+name)
	if errors.Is(err, store.ErrNotFound) {
		return User{}, 0, fmt.Errorf("%w: %q", ErrUnknownUser, name)
	}
	if err != nil {
		return User{}, 0, fmt.Errorf("%w: read user: %w", ErrUnavailable, err)
	}
	var rec User
	if err := json.Unmarshal(e.Value, &rec); err != nil || rec.Name != name {
		return User{}, 0, fmt.Errorf("%w: user record %q is corrupt", ErrUnavailable, name)
	}
	return rec, e.Version, nil
}

// Get returns the public view of a user.
func (u *Users) Get(ctx context.Context, name string) (UserInfo, error) {
	rec, _, err := u.get(ctx, name)
	return rec.Info(), err
}

// update applies change to the user's record with a compare-and-set,
// re-reading on a concurrent write (at most a few times).
func (u *Users) update(ctx context.Context, name string, change func(*User) error) (User, error) {
	for range 5 {
		rec, v, err := u.get(ctx, name)
		if err != nil {
			return User{}, err
		}
		if err := change(&rec); err != nil {
			return User{}, err
		}
		b, _ := json.Marshal(rec)
		_, err = u.kv.Put(ctx, userPrefix+name, b, store.PutOptions{Check: true, Version: v})
		if errors.Is(err, store.ErrVersionConflict) {
			continue
		}
		if err != nil {
			return User{}, fmt.Errorf("%w: store user: %w", ErrUnavailable, err)
		}
		return rec, nil
	}
	return User{}, fmt.Errorf("%w: user %q changed concurrently; try again", ErrUnavailable, name)
}

// SetPassword replaces a user's password.
func (u *Users) SetPassword(ctx context.Context, name, password string) error {
	if err := checkNewPassword(password); err != nil {
		return err
	}
	now, err := u.trustedNow()
	if err != nil {
		return err
	}
	h, err := HashPassword(password, u.params, u.rand)
	if err != nil {
		return err
	}
	_, err = u.update(ctx, name, func(r *User) error {
		r.PasswordHash, r.UpdatedAt = h, now.UTC()
		return nil
	})
	return err
}

// SetRoles replaces a user's roles.
func (u *Users) SetRoles(ctx context.Context, name string, roles []string) error {
	roles, err := checkRoles(roles)
	if err != nil {
		return err
	}
	now, err := u.trustedNow()
	if err != nil {
		return err
	}
	_, err = u.update(ctx, name, func(r *User) error {
		r.Roles, r.UpdatedAt = roles, now.UTC()
		return nil
	})
	return err
}

// SetDisabled disables or re-enables a user. A disabled user cannot log
// in or refresh.
func (u *Users) SetDisabled(ctx context.Context, name string, disabled bool) error {
	now, err := u.trustedNow()
	if err != nil {
		return err
	}
	_, err = u.update(ctx, name, func(r *User) error {
		r.Disabled, r.UpdatedAt = disabled, now.UTC()
		return nil
	})
	return err
}

// EnableTOTP gives the user a new TOTP secret (replacing any previous one)
// and returns it; from then on a login needs a code. The secret is shown
// once, to the administrator who enabled it.
func (u *Users) EnableTOTP(ctx context.Context, name string) ([]byte, error) {
	now, err := u.trustedNow()
	if err != nil {
		return nil, err
	}
	secret := make([]byte, totpSecret)
	if _, err := io.ReadFull(u.rand, secret); err != nil {
		return nil, fmt.Errorf("oauth: randomness: %w", err)
	}
	_, err = u.update(ctx, name, func(r *User) error {
		r.TOTPSecret, r.TOTPLastStep, r.UpdatedAt = secret, 0, now.UTC()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return secret, nil
}

// DisableTOTP removes a user's TOTP secret.
func (u *Users) DisableTOTP(ctx context.Context, name string) error {
	now, err := u.trustedNow()
	if err != nil {
		return err
	}
	_, err = u.update(ctx, name, func(r *User) error {
		r.TOTPSecret, r.TOTPLastStep, r.UpdatedAt = nil, 0, now.UTC()
		return nil
	})
	return err
}

// Delete removes a user. Tokens already issued stay valid until they
// expire (minutes); their refresh fails.
func (u *Users) Delete(ctx context.Context, name string) error {
	if _, _, err := u.get(ctx, name); err != nil {
		return err
	}
	if err := u.kv.Delete(ctx, userPrefix+name, store.DeleteOptions{}); err != nil {
		return fmt.Errorf("%w: delete user: %w", ErrUnavailable, err)
	}
	return nil
}

// List returns every user, by name.
func (u *Users) List(ctx context.Context) ([]UserInfo, error) {
	out := []UserInfo{}
	after := ""
	for range 1000 { // at most 1000 pages of 1000 users
		es, err := u.kv.List(ctx, store.ListOptions{Prefix: userPrefix, After: after, Limit: store.DefaultLimit})
		if err != nil {
			return nil, fmt.Errorf("%w: list users: %w", ErrUnavailable, err)
		}
		for _, e := range es {
			var rec User
			if json.Unmarshal(e.Value, &rec) == nil {
				out = append(out, rec.Info())
			}
		}
		if len(es) < store.DefaultLimit {
			break
		}
		after = es[len(es)-1].Key
	}
	return out, nil
}

// Authenticate checks a user's password and, when the user has TOTP, the
// one-time code, and returns the user. Every failure is ErrBadCredentials
// (a replayed code also matches ErrTOTPReplay), whether the name is
// unknown, the user disabled, the password or the code wrong; an unknown or
// disabled user still costs one full password hash (of a dummy hash made
// with the current parameters), so the time taken does not tell which
// names exist. A code's time step is recorded with a compare-and-set on
// the user's record before success is returned, so a code is accepted at
// most once across all replicas.
func (u *Users) Authenticate(ctx context.Context, name, password, code string) (User, error) {
	rec, _, err := u.get(ctx, name)
	if err != nil || rec.Disabled {
		if _, herr := u.checkPassword(ctx, u.dummy, password); herr != nil && errors.Is(herr, ErrUnavailable) {
			return User{}, herr
		}
		if err != nil && !errors.Is(err, ErrUnknownUser) {
			return User{}, err // the store failed: not the user's fault
		}
		return User{}, ErrBadCredentials
	}
	ok, err := u.checkPassword(ctx, rec.PasswordHash, password)
	if errors.Is(err, ErrUnavailable) {
		return User{}, err
	}
	if err != nil {
		return User{}, fmt.Errorf("%w: user %q: %w", ErrUnavailable, name, err)
	}
	if !ok {
		return User{}, ErrBadCredentials
	}
	if len(rec.TOTPSecret) == 0 {
		return rec, nil
	}
	now, err := u.trustedNow()
	if err != nil {
		return User{}, err
	}
	var replay bool
	rec, err = u.update(ctx, name, func(r *User) error {
		if len(r.TOTPSecret) == 0 {
			return nil // disabled meanwhile
		}
		step, ok, rp := MatchTOTP(r.TOTPSecret, code, now, r.TOTPLastStep)
		if !ok {
			replay = rp
			return ErrBadCredentials
		}
		r.TOTPLastStep = step
		return nil
	})
	if errors.Is(err, ErrBadCredentials) && replay {
		return User{}, fmt.Errorf("%w: %w", ErrBadCredentials, ErrTOTPReplay)
	}
	if err != nil {
		return User{}, err
	}
	return rec, nil
}
