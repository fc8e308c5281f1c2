# nkpki — the two commands a newcomer needs are `make demo` and `make test`.

CARGO ?= cargo
NKPKI := target/debug/nkpki

.PHONY: all deps build release man completions install deb demo test screenshots lint bench fuzz clean

all: build

deps:
	@scripts/install-deps.sh

build:
	$(CARGO) build --locked

# What gets installed or packaged: the release binary, and man pages and completions
# generated from it (`make install BIN=target/debug/nkpki` skips the release build).
RELEASE := target/release/nkpki
BIN ?= $(RELEASE)
PREFIX ?= /usr/local
DESTDIR ?=

release:
	$(CARGO) build --locked --release

$(RELEASE): release

man: $(BIN)
	rm -rf target/man
	$(BIN) man --out target/man

completions: $(BIN)
	mkdir -p target/completions
	$(BIN) completions bash > target/completions/nkpki
	$(BIN) completions zsh > target/completions/_nkpki
	$(BIN) completions fish > target/completions/nkpki.fish

install: man completions
	install -Dm 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/nkpki
	install -d $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0644 target/man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -Dm 0644 target/completions/nkpki $(DESTDIR)$(PREFIX)/share/bash-completion/completions/nkpki
	install -Dm 0644 target/completions/_nkpki $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_nkpki
	install -Dm 0644 target/completions/nkpki.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/nkpki.fish

# target/debian/nkpki_<version>_<arch>.deb: binary, man pages, completions, systemd units,
# /etc/nkpki/serve.toml (scripts/deb.sh; dpkg-deb, no cargo-deb needed).
deb: $(BIN)
	scripts/deb.sh $(BIN) target/debian

# A 3-of-5 ceremony, an OpenSSL CSR, offline signing with three shares, openssl verify.
demo: deps build
	@scripts/demo.sh

# Every test against the real peers (OpenSSL, age, pkilint), plus format and lint checks.
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) test --locked

# The browser tests again, saving each page at 1280 px and 390 px wide into docs/ui/.
screenshots: deps
	NKPKI_UI_SCREENSHOTS=1 $(CARGO) test --locked --test integration browser_ui -- --test-threads=1

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Timings (ceremony, signing offline and online, split/combine, tokens) with ratios against
# OpenSSL where one exists, then the online load bar (`make bench AGENTS=2000 SESSIONS=200`).
AGENTS ?= 200
SESSIONS ?= 20
WATCHERS ?= 200
bench: deps
	$(CARGO) build --locked --release --bins --examples
	@scripts/bench.sh target/release/nkpki
	@echo; echo '==> online load bar: $(AGENTS) agents, $(SESSIONS) sessions, $(WATCHERS) event streams, 100 silent connections'
	target/release/examples/loadbar target/release/nkpki --agents $(AGENTS) --sessions $(SESSIONS) --watchers $(WATCHERS)

# Every cargo-fuzz target for FUZZ_SECONDS each (nightly only; skipped without one).
# `make test` replays the committed corpus on stable (tests/integration/fuzz_corpus.rs).
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

clean:
	$(CARGO) clean
