# Entry points for building and testing watermill-sls. README states them; .ci/run calls `make test` and `make demo`.
#
# Targets that run tests go through scripts/with-postgres.sh: with DATABASE_URL unset it starts a throwaway
# PostgreSQL cluster from the system's binaries (installing Debian's postgresql when they are missing), exports
# DATABASE_URL, and stops the cluster afterwards, also when the tests fail.

SHELL := /bin/bash

GO ?= go
PKGS ?= ./...
WITH_PG := scripts/with-postgres.sh

# -timeout is per test binary; packages run in parallel, so a hang costs at most this much of `make test`.
TEST_TIMEOUT ?= 20m
SOAK_TIMEOUT ?= 120m
BENCH ?= .
FUZZTIME ?= 30s

.PHONY: test soak bench vet fmt-check fuzz demo race-toolchain

## test: go vet, then every test with the race detector against a real PostgreSQL.
test: vet fmt-check race-toolchain
	$(WITH_PG) $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

## soak: like test, with the full-size crash/soak/scale variants (WSLS_SOAK=1) and a long timeout.
soak: vet race-toolchain
	$(WITH_PG) env WSLS_SOAK=1 $(GO) test -race -count=1 -timeout $(SOAK_TIMEOUT) $(PKGS)

## bench: every benchmark (BENCH selects them), with allocation counts.
bench:
	$(WITH_PG) $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem $(PKGS)

## vet: go vet.
vet:
	$(GO) vet $(PKGS)

## fmt-check: fail when a Go file is not gofmt-formatted.
fmt-check:
	@files="$$(gofmt -l .)"; \
	if [ -n "$$files" ]; then echo "gofmt -l: these files need gofmt -w:" >&2; echo "$$files" >&2; exit 1; fi

## fuzz: each fuzz target for FUZZTIME (default 30s), one after another.
fuzz:
	scripts/fuzz.sh $(FUZZTIME) $(PKGS)

## demo: the examples/ipcount pipeline end to end on the SLS emulator and a local PostgreSQL: per-IP counts in
## event-time windows written exactly once, the consumer killed with SIGKILL and restarted midway, and a printed
## verification against the generated logs (non-zero exit when it fails). DEMO_FLAGS passes flags (-logs ...).
DEMO_FLAGS ?=
demo:
	$(WITH_PG) $(GO) run ./examples/ipcount $(DEMO_FLAGS)

# The race detector needs cgo and a C compiler; a fresh machine with only Go has cgo off for want of gcc.
race-toolchain:
	@if [ "$$($(GO) env CGO_ENABLED)" != 1 ]; then \
		if ! command -v "$$($(GO) env CC)" >/dev/null 2>&1; then \
			echo "go test -race needs a C compiler; installing gcc" >&2; \
			scripts/apt-install.sh gcc libc6-dev; \
		fi; \
		if [ "$$($(GO) env CGO_ENABLED)" != 1 ]; then \
			echo "go test -race needs cgo, which is off (CGO_ENABLED=$$($(GO) env CGO_ENABLED)); enable it" >&2; \
			exit 1; \
		fi; \
	fi
