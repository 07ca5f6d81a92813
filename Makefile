# mapsentry — see README.md. Targets need no clang except `generate`.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
BIN := bin/mapsentry
# The suite builds victims with three toolchains and runs real daemons:
# give it time, and run packages two at a time (2 cores).
TEST_FLAGS ?= -count=1 -timeout 60m -p 2

.PHONY: all build run generate check-generated deps test test-unit fuzz lint bench clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/mapsentry
	GOARCH=arm64 $(GO) build ./...

# Build and run the daemon in the foreground with its embedded defaults
# (socket /run/mapsentry/mapsentry.sock, state /var/lib/mapsentry). Root.
run: build
	./$(BIN) daemon

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
	$(MAKE) fuzz FUZZTIME=20s

test-unit:
	$(GO) test -count=1 -short ./...

FUZZTIME ?= 20s
fuzz:
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$t/*_test.go | sed 's/func //'); do \
			echo "fuzz $$t $$f $(FUZZTIME)"; \
			$(GO) test $$t -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
		done; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel.go$$')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOARCH=arm64 $(GO) build ./...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./bench/...

clean:
	rm -rf bin
