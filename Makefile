# AVON — see README.md. `make run` and `make test` are all a newcomer needs.
GO       ?= go
BIN      := $(CURDIR)/bin
CONFIG   ?= config.hcl
# Every binary: the core and each plugin (out-of-process, started by the core).
CMDS     := ./core/cmd/avon ./agent/cmd/avon-agent ./plugins/kms-soft ./plugins/kms-hsm ./plugins/ca-dilithium ./plugins/policy-abac ./plugins/acme ./examples/pqc-slhdsa
TESTFLAGS ?= -race -count=1 -timeout 25m
BENCHFLAGS ?= -run '^$$' -bench . -benchmem -benchtime 2s

.PHONY: all build run test bench bench-tunnel bench-handshake lint proto clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ $(CMDS)

run: build
	$(BIN)/avon server -config $(CONFIG)

test: build lint
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) ./...
	$(BIN)/avon config validate -config $(CONFIG)

bench:
	$(GO) test $(BENCHFLAGS) ./...

# One TCP stream through the AVON tunnel and through wireguard-go in the
# same network namespaces (needs root; see bench/README.md).
bench-tunnel: build
	AVON_BIN=$(BIN) bash bench/tunnel-vs-wireguard-go.sh

# Handshakes per second, the gateway's CPU per handshake against the
# primitive floor, and its memory per idle session: a real gateway engine in
# a child process and simulated agents on loopback UDP (bench/README.md).
AGENTS ?= 10000
IDLE   ?= 20s
bench-handshake:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/avon-bench ./bench/avon-bench
	$(BIN)/avon-bench -agents $(AGENTS) -idle $(IDLE) -rekey $(BENCH_ARGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Regenerates sdk/proto/**.pb.go; needs protoc (Debian: protobuf-compiler),
# protoc-gen-go and protoc-gen-go-grpc on PATH.
proto:
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" sdk/proto/gen.sh

clean:
	rm -rf $(BIN)
