# mapsentry — see README.md. Targets need no clang except `generate`.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
BIN := bin/mapsentry
# The suite builds victims with three toolchains and runs real daemons:
# give it time, and run packages two at a time (2 cores).
TEST_FLAGS ?= -count=1 -timeout 60m -p 2

.PHONY: demo all bin build run generate check-generated deps test test-unit fuzz lint bench clean install uninstall

all: build

# The binary alone; `build` also checks that everything builds for arm64.
bin:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/mapsentry

build: bin
	GOARCH=arm64 $(GO) build ./...

# Build and run the daemon in the foreground with its embedded defaults
# (socket /run/mapsentry/mapsentry.sock, state /var/lib/mapsentry). Root.
run: build
	./$(BIN) daemon

# A local Jaeger, a daemon pointed at it, a program that crashes, and the
# URL of the resulting trace (scripts/demo.sh). Root.
demo: build
	scripts/demo.sh

generate:
	$(GO) generate ./bpf

check-generated:
	scripts/check-generated.sh

deps:
	scripts/deps.sh

# The whole suite: dependencies, BPF regeneration check, vet, unit,
# privileged and end-to-end tests, and a short fuzz run.
test: deps check-generated lint
	$(GO) test $(TEST_FLAGS) ./...
	$(MAKE) fuzz

test-unit:
	$(GO) test -count=1 -short ./...

# A count, not a duration: a -fuzztime duration races the fuzz coordinator's
# own deadline (go.dev/issue/75804, fixed only in Go 1.27) and fails with a
# bare "context deadline exceeded" on a loaded machine.
FUZZTIME ?= 20000x
fuzz:
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$t/*_test.go | sed 's/func //'); do \
			echo "fuzz $$t $$f $(FUZZTIME)"; \
			$(GO) test $$t -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
		done; \
	done

# gofmt, go vet, and go.mod/go.sum exactly as `go mod tidy` leaves them
# (a dependency imported directly must not be marked // indirect).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel.go$$')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@$(GO) mod tidy -diff || { echo "lint: go.mod/go.sum are not tidy: run 'go mod tidy' and commit"; exit 1; }
	$(GO) vet ./...
	GOARCH=arm64 $(GO) build ./...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./bench/...

clean:
	rm -rf bin

# Install as a systemd service (root): binary, unit, sysusers/tmpfiles
# snippets, default config (never overwriting an existing one); on a
# running systemd also the user and directories, and a daemon-reload.
# Then: systemctl enable --now mapsentry && mapsentry selftest. Upgrade in
# place: make install && systemctl restart mapsentry (docs/install.md).
# DESTDIR= stages into a tree (a package, an image; the systemd test boots
# one); NOBUILD=1 installs $(BIN) as it is, built elsewhere.
PREFIX ?= /usr/local
SYSTEMD_DIR ?= /etc/systemd/system
SYSUSERS_DIR ?= /usr/lib/sysusers.d
TMPFILES_DIR ?= /usr/lib/tmpfiles.d
install: $(if $(NOBUILD),,bin)
	# A new file renamed over the old: a running daemon keeps its own, and
	# no one ever runs a half-written binary (upgrade in place).
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/.mapsentry.new
	mv -f $(DESTDIR)$(PREFIX)/bin/.mapsentry.new $(DESTDIR)$(PREFIX)/bin/mapsentry
	install -d -m 0755 $(DESTDIR)$(SYSTEMD_DIR)
	sed 's#/usr/local/bin/mapsentry#$(PREFIX)/bin/mapsentry#g' deploy/systemd/mapsentry.service > $(DESTDIR)$(SYSTEMD_DIR)/mapsentry.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_DIR)/mapsentry.service
	install -D -m 0644 deploy/systemd/mapsentry.sysusers.conf $(DESTDIR)$(SYSUSERS_DIR)/mapsentry.conf
	install -D -m 0644 deploy/systemd/mapsentry.tmpfiles.conf $(DESTDIR)$(TMPFILES_DIR)/mapsentry.conf
	install -d -m 0755 $(DESTDIR)/etc/mapsentry/conf.d
	[ -e $(DESTDIR)/etc/mapsentry/mapsentry.yaml ] || install -m 0644 deploy/systemd/mapsentry.yaml $(DESTDIR)/etc/mapsentry/mapsentry.yaml
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemd-sysusers mapsentry.conf && systemd-tmpfiles --create mapsentry.conf && systemctl daemon-reload; fi

# Remove what install put in place; keeps /etc/mapsentry and /var/lib/mapsentry
# (config and crash reports belong to the operator).
uninstall:
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now mapsentry || true; fi
	rm -f $(DESTDIR)$(PREFIX)/bin/mapsentry $(DESTDIR)$(SYSTEMD_DIR)/mapsentry.service \
		$(DESTDIR)$(SYSUSERS_DIR)/mapsentry.conf $(DESTDIR)$(TMPFILES_DIR)/mapsentry.conf
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
