#!/usr/bin/env bash
# apt-install.sh PKG...: installs Debian packages non-interactively.
#
# The test harness calls this only when something it needs is missing (PostgreSQL's server binaries, a C
# compiler for -race, make). As root it runs apt-get directly; otherwise through sudo when sudo exists, and it
# fails with a clear message when neither is possible. It refreshes the package lists first because a fresh
# machine (or container image) usually ships without them.
set -euo pipefail

if [ "$#" -eq 0 ]; then
	echo "usage: $0 PACKAGE..." >&2
	exit 2
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "apt-install: apt-get not found; install $* with your system's package manager" >&2
	exit 1
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "apt-install: need root to install $* (not root and no sudo); install them yourself" >&2
		exit 1
	fi
	# env(1) runs as root under sudo, so DEBIAN_FRONTEND reaches apt-get whatever sudo's env_reset policy is.
	as_root=(sudo)
fi

echo "apt-install: installing $*" >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
