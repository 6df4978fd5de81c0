#!/usr/bin/env bash
# Regenerates the Go code for every .proto under sdk/proto (make proto).
# Needs protoc, protoc-gen-go and protoc-gen-go-grpc on PATH.
set -euo pipefail
cd "$(dirname "$0")"
for f in $(find . -name '*.proto' | sort); do
  protoc -I . --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. "$f"
done
