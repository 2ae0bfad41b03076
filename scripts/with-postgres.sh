#!/usr/bin/env bash
# with-postgres.sh CMD [ARG...]: runs CMD with DATABASE_URL pointing at a PostgreSQL server.
#
# When DATABASE_URL is already set, CMD simply replaces this script. Otherwise the script starts a throwaway
# cluster from the system's PostgreSQL binaries (installing Debian's `postgresql` package when initdb/pg_ctl are
# missing), listening only on 127.0.0.1 at a free port with its unix socket in a private directory, exports
# DATABASE_URL=postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable, runs CMD, then stops the cluster and
# deletes its files, also when CMD fails or the script is interrupted. The exit status is CMD's.
#
# The cluster trades durability for speed (fsync, synchronous_commit and full_page_writes off): it is for tests.
# As root, PostgreSQL refuses to run, so the cluster belongs to the `postgres` OS user (created if missing) and
# its programs run through runuser.
set -euo pipefail

if [ "$#" -eq 0 ]; then
	echo "usage: $0 CMD [ARG...]" >&2
	exit 2
fi

if [ -n "${DATABASE_URL:-}" ]; then
	exec "$@"
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runuser="" # set below when we are root
log() { echo "with-postgres: $*" >&2; }
die() {
	log "$*"
	exit 1
}

# find_pg_bin sets initdb and pg_ctl: from PATH when both are there, else from the newest
# /usr/lib/postgresql/<version>/bin (where Debian puts them; its /usr/bin holds only wrappers).
find_pg_bin() {
	initdb="" pg_ctl=""
	if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
		initdb="$(command -v initdb)" pg_ctl="$(command -v pg_ctl)"
		return 0
	fi
	local dir
	dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
	if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
		initdb="$dir/initdb" pg_ctl="$dir/pg_ctl"
		return 0
	fi
	return 1
}

# free_port prints a TCP port on 127.0.0.1 that nothing listens on right now. Another process may take it
# before PostgreSQL binds it; start_cluster retries with a new port when that happens.
free_port() {
	if command -v python3 >/dev/null 2>&1 &&
		python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null; then
		return 0
	fi
	local port
	for _ in $(seq 1 200); do
		port=$((20000 + RANDOM % 40000))
		# A refused connection means the port is free; bash opens /dev/tcp itself, no extra tools needed.
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	return 1
}

# sbin_tool prints the path of an administrative tool, also when PATH lacks the sbin directories (as it often
# does for non-login shells and unprivileged users).
sbin_tool() {
	local dir
	command -v "$1" 2>/dev/null && return 0
	for dir in /usr/sbin /sbin; do
		if [ -x "$dir/$1" ]; then
			echo "$dir/$1"
			return 0
		fi
	done
	return 1
}

# as_owner runs a command as the cluster's owner: the postgres user when we are root, else ourselves.
# It runs in the cluster's directory so PostgreSQL's programs never trip over an unreadable working directory.
as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		(cd "$tmp" && "$runuser" -u postgres -- "$@")
	else
		(cd "$tmp" && "$@")
	fi
}

# shellcheck disable=SC2317 # invoked through the EXIT trap
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "${tmp:-}" ]; then
		if [ -f "$tmp/data/postmaster.pid" ]; then
			as_owner "$pg_ctl" -D "$tmp/data" -m immediate -w stop >/dev/null 2>&1 || log "could not stop PostgreSQL in $tmp/data"
		fi
		rm -rf "$tmp"
	fi
	exit "$rc"
}

if ! find_pg_bin; then
	log "PostgreSQL server binaries (initdb, pg_ctl) not found; installing Debian's postgresql package"
	"$here/apt-install.sh" postgresql || die "could not install postgresql; install it or set DATABASE_URL"
	find_pg_bin || die "postgresql installed but initdb/pg_ctl not found under /usr/lib/postgresql"
fi

if [ "$(id -u)" -eq 0 ]; then
	runuser="$(sbin_tool runuser)" || die "running as root needs runuser (util-linux) to start PostgreSQL as postgres"
	if ! id -u postgres >/dev/null 2>&1; then
		log "creating OS user postgres to own the cluster"
		useradd="$(sbin_tool useradd)" || die "no OS user postgres and no useradd to create it"
		"$useradd" --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
	fi
fi

tmp=""
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tmp="$(mktemp -d "${TMPDIR:-/tmp}/wsls-pg.XXXXXX")"
if [ "$(id -u)" -eq 0 ]; then
	chown postgres: "$tmp"
	if ! "$runuser" -u postgres -- test -w "$tmp"; then
		# TMPDIR lies under a directory the postgres user cannot enter (say /root); /tmp is always reachable.
		rm -rf "$tmp"
		tmp="$(mktemp -d /tmp/wsls-pg.XXXXXX)"
		chown postgres: "$tmp"
	fi
fi
as_owner mkdir -m 0700 "$tmp/socket"

as_owner "$initdb" -D "$tmp/data" -A trust -U postgres -E UTF8 --locale=C --no-sync >"$tmp/initdb.log" 2>&1 ||
	die "initdb failed: $(cat "$tmp/initdb.log")"

# Settings go into postgresql.conf rather than on pg_ctl's -o line, which a shell re-parses (paths with spaces).
cat >>"$tmp/data/postgresql.conf" <<CONF

# with-postgres.sh: a throwaway test cluster
listen_addresses = '127.0.0.1'
unix_socket_directories = '$tmp/socket'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF

started=""
for attempt in 1 2 3 4 5; do
	port="$(free_port)" || die "no free TCP port found on 127.0.0.1"
	if as_owner "$pg_ctl" -D "$tmp/data" -l "$tmp/postgres.log" -o "-p $port" -w -t 60 start >/dev/null 2>&1; then
		started=1
		break
	fi
	log "PostgreSQL did not start on port $port (attempt $attempt); retrying"
done
[ -n "$started" ] || die "PostgreSQL did not start: $(tail -n 20 "$tmp/postgres.log" 2>/dev/null)"

export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
version="$("$(dirname "$pg_ctl")/postgres" --version 2>/dev/null || "$pg_ctl" --version)"
log "started $version from $(dirname "$pg_ctl") on 127.0.0.1:$port (data in $tmp/data); DATABASE_URL=$DATABASE_URL"

# Not exec: the EXIT trap must outlive CMD to stop the cluster. CMD's status becomes ours through cleanup.
set +e
"$@"
exit $?
