# sbc-sidecar — developer entry points. `make run` and `make test` are all a new user needs.
CARGO ?= cargo
export SBC_TEST_MYSQL_USER ?= sbc_test
export SBC_TEST_MYSQL_PASSWORD ?= sbc_test

.PHONY: all build run test lint bench soak deb services clean

all: build

build:
	$(CARGO) build --release --bins

# Installs/starts MariaDB, Redis and sipp when missing (uses sudo when not root).
services:
	bash .ci/services.sh

# The daemon on local defaults: local MariaDB (database sbc_local with the schema), local Redis,
# and the drachtio double on 127.0.0.1:9022 / SIP 127.0.0.1:5060 when no drachtio-server answers.
run: services
	$(CARGO) build --release --bins
	bash .ci/run-local.sh

# Every test, against real MariaDB, Redis and sipp.
test: services
	$(CARGO) test --all-targets -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: services
	$(CARGO) build --release --bins
	$(CARGO) run --release --bin sbc-bench

# A bounded chaos run of the release daemon with invariants (see tests/support/soak_main.rs):
# SOAK_SECONDS (default 300), SOAK_RATE (REGISTERs per second, default 100). Exits non-zero
# when an invariant fails.
soak: services
	$(CARGO) build --release --bins
	$(CARGO) run --release --bin sbc-soak

# The Debian package target/debian/sbc-sidecar_<version>_<arch>.deb (see packaging/build-deb.sh).
deb:
	CARGO="$(CARGO)" bash packaging/build-deb.sh

clean:
	$(CARGO) clean
