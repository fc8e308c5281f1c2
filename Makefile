# nkpki — the two commands a newcomer needs are `make demo` and `make test`.

CARGO ?= cargo
NKPKI := target/debug/nkpki

.PHONY: all deps build demo test lint bench fuzz clean

all: build

deps:
	@scripts/install-deps.sh

build:
	$(CARGO) build --locked

# A 3-of-5 ceremony, an OpenSSL CSR, offline signing with three shares, openssl verify.
demo: deps build
	@scripts/demo.sh

# Every test against the real peers (OpenSSL, age, pkilint), plus format and lint checks.
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) test --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Timings (ceremony, signing offline and online, split/combine, tokens) with ratios against
# OpenSSL where one exists, then the online load bar (`make bench AGENTS=2000 SESSIONS=200`).
AGENTS ?= 200
SESSIONS ?= 20
bench: deps
	$(CARGO) build --locked --release --bins --examples
	@scripts/bench.sh target/release/nkpki
	@echo; echo '==> online load bar: $(AGENTS) agents, $(SESSIONS) sessions, 100 silent connections'
	target/release/examples/loadbar target/release/nkpki --agents $(AGENTS) --sessions $(SESSIONS)

# Every cargo-fuzz target for FUZZ_SECONDS each (nightly only; skipped without one).
# `make test` replays the committed corpus on stable (tests/integration/fuzz_corpus.rs).
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

clean:
	$(CARGO) clean
