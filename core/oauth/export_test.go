package oauth

// SetVerify replaces the password check of u (tests count its calls).
func SetVerify(u *Users, f func(encoded, password string) (bool, error)) { u.verify = f }

// Dummy returns the dummy hash verified for unknown users.
func Dummy(u *Users) string { return u.dummy }
