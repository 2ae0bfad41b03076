#!/usr/bin/env bash
# fuzz.sh [FUZZTIME [PACKAGE...]]: runs every fuzz target of the packages (default ./...) for FUZZTIME each
# (default 30s), one after another: go test -fuzz takes one target of one package at a time. It stops at the
# first target that finds a failure; the failing input is saved under the package's testdata/fuzz.
set -euo pipefail

fuzztime="${1:-30s}"
shift || true
[ "$#" -gt 0 ] || set -- ./...
go="${GO:-go}"

ran=0
for pkg in $("$go" list "$@"); do
	# A package whose tests do not compile fails here instead of being skipped.
	list="$("$go" test -list '^Fuzz' "$pkg")"
	for target in $(grep '^Fuzz' <<<"$list" || true); do
		echo "fuzz: $pkg $target for $fuzztime" >&2
		"$go" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
		ran=$((ran + 1))
	done
done
echo "fuzz: ran $ran fuzz targets for $fuzztime each" >&2
