package testutil

import "os"

// SoakEnv is the environment variable that selects the full-size variants of crash, soak and scale tests.
// `make soak` sets it to 1.
const SoakEnv = "WSLS_SOAK"

// Soak reports whether the full-size variants of long tests should run: WSLS_SOAK is set to anything but "" or
// "0". Regular runs (`make test`, CI) use small numbers that still exercise the same paths.
func Soak() bool {
	v := os.Getenv(SoakEnv)
	return v != "" && v != "0"
}

// SoakOr returns soak under [Soak] and normal otherwise, for picking counts and durations in one line:
//
//	messages := testutil.SoakOr(2_000, 2_000_000)
func SoakOr[T any](normal, soak T) T {
	if Soak() {
		return soak
	}
	return normal
}
