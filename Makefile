# Foreman: build, generated assets, the Debian package, install/uninstall.
#
#   make build                 release binary (target/release/foreman)
#   make assets                completions and man pages from that binary
#   make deb                   target/debian/foreman_<version>_<arch>.deb (needs cargo-deb)
#   sudo make install          binary, unit, completions, man pages, default config
#   sudo make uninstall        all of that but the configuration and the activity log
#   make verify-unit           systemd-analyze verify on the unit as installed
#
# install/uninstall honour PREFIX (default /usr/local) and DESTDIR (staging,
# e.g. for a package build). The configuration always goes to
# $(SYSCONFDIR)/foreman/foreman.toml (default /etc), Foreman's default path,
# and is installed only when absent: an existing configuration is never
# overwritten. The unit's ExecStart= is rewritten to $(BINDIR)/foreman.

CARGO      ?= cargo
# --locked: build exactly what Cargo.lock pins (override with CARGO_FLAGS=).
CARGO_FLAGS ?= --locked
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
DATADIR    ?= $(PREFIX)/share
MANDIR     ?= $(DATADIR)/man
DOCDIR     ?= $(DATADIR)/doc/foreman
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
# Debian's zsh looks in vendor-completions (the .deb uses it); elsewhere,
# and under /usr/local, site-functions is on zsh's default fpath.
ZSHCOMPDIR ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d

BIN    := target/release/foreman
ASSETS := target/assets
# The man pages: foreman.1.gz and foreman-<subcommand>.1.gz, as many as the
# binary has subcommands (so no list of them here to fall behind).
MANPAGES := $(ASSETS)/man
GENERATED := $(ASSETS)/foreman.bash $(ASSETS)/_foreman $(ASSETS)/foreman.fish $(MANPAGES)/foreman.1.gz

.PHONY: all build assets deb install uninstall verify-unit clean-assets

all: build assets

build:
	$(CARGO) build --release $(CARGO_FLAGS)

# Generated from the built binary, so they always match its command line.
# Written to a temporary file first: a failing command leaves no empty asset.
assets: build
	@mkdir -p $(ASSETS)
	$(BIN) completions bash > $(ASSETS)/foreman.bash.tmp && mv $(ASSETS)/foreman.bash.tmp $(ASSETS)/foreman.bash
	$(BIN) completions zsh > $(ASSETS)/_foreman.tmp && mv $(ASSETS)/_foreman.tmp $(ASSETS)/_foreman
	$(BIN) completions fish > $(ASSETS)/foreman.fish.tmp && mv $(ASSETS)/foreman.fish.tmp $(ASSETS)/foreman.fish
	@# Made in a fresh directory and swapped in whole: a renamed or removed
	@# subcommand leaves no stale page behind. gzip -n: no name or time in
	@# the header, so the same binary gives the same bytes.
	rm -rf $(MANPAGES).tmp $(MANPAGES).old
	$(BIN) man --dir $(MANPAGES).tmp >/dev/null
	for f in $(MANPAGES).tmp/*.1; do gzip -9n "$$f" || exit 1; done
	if [ -d $(MANPAGES) ]; then mv $(MANPAGES) $(MANPAGES).old; fi
	mv $(MANPAGES).tmp $(MANPAGES) && rm -rf $(MANPAGES).old $(ASSETS)/foreman.1.gz

# cargo-deb packages what `build` and `assets` made ([package.metadata.deb]
# in Cargo.toml); install it with `cargo install cargo-deb`.
deb: build assets
	@command -v cargo-deb >/dev/null 2>&1 || { echo "cargo-deb is not installed: cargo install cargo-deb" >&2; exit 1; }
	$(CARGO) deb --no-build

# No `build` prerequisite: `sudo make install` after `make` must not run
# cargo as root. Build first (`make`), then install.
install:
	@test -x $(BIN) || { echo "$(BIN) missing: run 'make' first (as yourself, not root)" >&2; exit 1; }
	@for f in $(GENERATED); do test -f $$f || { echo "$$f missing: run 'make assets' first" >&2; exit 1; }; done
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/foreman
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/bin/foreman|$(BINDIR)/foreman|g' -e 's|/usr/share/doc/foreman|$(DOCDIR)|g' systemd/foreman.service > $(DESTDIR)$(UNITDIR)/foreman.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/foreman.service
	install -D -m 0644 packaging/foreman.sysusers $(DESTDIR)$(SYSUSERSDIR)/foreman.conf
	install -D -m 0644 $(ASSETS)/foreman.bash $(DESTDIR)$(BASHCOMPDIR)/foreman
	install -D -m 0644 $(ASSETS)/_foreman $(DESTDIR)$(ZSHCOMPDIR)/_foreman
	install -D -m 0644 $(ASSETS)/foreman.fish $(DESTDIR)$(FISHCOMPDIR)/foreman.fish
	install -d -m 0755 $(DESTDIR)$(MANDIR)/man1
	install -m 0644 $(MANPAGES)/*.1.gz $(DESTDIR)$(MANDIR)/man1/
	install -D -m 0644 foreman.toml $(DESTDIR)$(DOCDIR)/foreman.toml.example
	install -D -m 0644 docs/operations.md $(DESTDIR)$(DOCDIR)/operations.md
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/foreman/foreman.toml ]; then \
		echo "kept the existing $(DESTDIR)$(SYSCONFDIR)/foreman/foreman.toml (the new default is $(DESTDIR)$(DOCDIR)/foreman.toml.default)"; \
		install -D -m 0644 packaging/foreman.toml $(DESTDIR)$(DOCDIR)/foreman.toml.default; \
	else \
		install -D -m 0644 packaging/foreman.toml $(DESTDIR)$(SYSCONFDIR)/foreman/foreman.toml; \
	fi
	@if [ -z "$(DESTDIR)" ]; then \
		if command -v systemd-sysusers >/dev/null 2>&1; then systemd-sysusers $(SYSUSERSDIR)/foreman.conf; \
		else echo "create the 'foreman' system user: adduser --system --group --home /var/lib/foreman --no-create-home foreman"; fi; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
		echo "installed. Edit $(SYSCONFDIR)/foreman/foreman.toml, run 'foreman check-config', then 'systemctl enable --now foreman'"; \
	fi

# Leaves $(SYSCONFDIR)/foreman (your configuration), /var/lib/foreman (the
# activity log) and the foreman user in place.
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl disable --now foreman.service 2>/dev/null || true; \
	fi
	rm -f $(DESTDIR)$(BINDIR)/foreman
	rm -f $(DESTDIR)$(UNITDIR)/foreman.service
	rm -f $(DESTDIR)$(SYSUSERSDIR)/foreman.conf
	rm -f $(DESTDIR)$(BASHCOMPDIR)/foreman
	rm -f $(DESTDIR)$(ZSHCOMPDIR)/_foreman
	rm -f $(DESTDIR)$(FISHCOMPDIR)/foreman.fish
	rm -f $(DESTDIR)$(MANDIR)/man1/foreman.1.gz $(DESTDIR)$(MANDIR)/man1/foreman-*.1.gz
	rm -f $(DESTDIR)$(DOCDIR)/foreman.toml.example $(DESTDIR)$(DOCDIR)/foreman.toml.default $(DESTDIR)$(DOCDIR)/operations.md
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept $(SYSCONFDIR)/foreman, /var/lib/foreman and the foreman user; remove them by hand if you want them gone"

# The unit as `make install` would install it, checked by systemd. The binary
# must exist at ExecStart's path: run after `make install`, or with
# BINDIR pointing at an installed foreman.
verify-unit:
	@mkdir -p target/unit-check
	sed -e 's|/usr/bin/foreman|$(BINDIR)/foreman|g' -e 's|/usr/share/doc/foreman|$(DOCDIR)|g' systemd/foreman.service > target/unit-check/foreman.service
	systemd-analyze verify target/unit-check/foreman.service

clean-assets:
	rm -rf $(ASSETS)
