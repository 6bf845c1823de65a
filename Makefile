# sbc-sidecar — developer entry points. `make run` and `make test` are all a new user needs.
CARGO ?= cargo
export SBC_TEST_MYSQL_USER ?= sbc_test
export SBC_TEST_MYSQL_PASSWORD ?= sbc_test

.PHONY: all build run test lint bench soak deb services clean fuzz

all: build

# The daemon's programs and the test tools (drachtio-double, sbc-bench, sbc-soak).
build:
	$(CARGO) build --release --workspace --bins

# Installs/starts MariaDB, Redis and sipp when missing (uses sudo when not root).
services:
	bash .ci/services.sh

# The daemon on local defaults: local MariaDB (database sbc_local with the schema and a demo
# account whose credentials it prints, see README "Quick start"), local Redis,
# and the drachtio double on 127.0.0.1:9022 / SIP 127.0.0.1:5060 when no drachtio-server answers.
run: services
	$(CARGO) build --release --workspace --bins
	bash .ci/run-local.sh

# Every test of every crate of the workspace, against real MariaDB, Redis and sipp.
test: services
	$(CARGO) test --workspace --all-targets -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Coverage-guided fuzzing of the parsers (SIP message and header values, digest credentials,
# drachtio frames and messages, CLI lines, webhook replies): every target of fuzz/ in turn for
# FUZZ_SECONDS (default 60) each, with cargo-fuzz and libFuzzer on the nightly toolchain
# (installs cargo-fuzz when missing). Logs in target/fuzz-logs/; see README "Fuzzing".
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash .ci/fuzz.sh

bench: services
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release -p sbc-test-tools --bin sbc-bench

# A bounded chaos run of the release daemon with invariants (see test-tools/src/bin/sbc-soak/):
# SOAK_SECONDS (default 300), SOAK_RATE (REGISTERs per second, default 100). Exits non-zero
# when an invariant fails.
soak: services
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release -p sbc-test-tools --bin sbc-soak

# The Debian package target/debian/sbc-sidecar_<version>_<arch>.deb with sbc-sidecar and sbcctl
# only (see packaging/build-deb.sh).
deb:
	CARGO="$(CARGO)" bash packaging/build-deb.sh

clean:
	$(CARGO) clean
