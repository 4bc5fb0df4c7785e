#!/usr/bin/env bash
# scripts/gen-e2b.sh: regenerates internal/e2b/gen from E2B's published
# Connect-RPC descriptions (process.proto, filesystem.proto; Apache-2.0).
# The generated code is committed: builds and CI never run this.
#
#   E2B_PROTO_DIR=/path/to/reference/e2b scripts/gen-e2b.sh
#
# Needs protoc and its well-known types (Debian: protobuf-compiler libprotobuf-dev) and the two Go plugins, which it
# installs with `go install` at the versions go.mod pins.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${E2B_PROTO_DIR:-../shared/reference/e2b}
[ -f "$src/process.proto" ] || src=/work/shared/reference/e2b
[ -f "$src/process.proto" ] || { echo "gen-e2b: no process.proto in \$E2B_PROTO_DIR" >&2; exit 1; }
command -v protoc >/dev/null || { echo "gen-e2b: install protoc (apt-get install protobuf-compiler libprotobuf-dev)" >&2; exit 1; }

bin=$(go env GOPATH)/bin
pbver=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
cver=$(go list -m -f '{{.Version}}' connectrpc.com/connect)
GOFLAGS=-mod=mod go install "google.golang.org/protobuf/cmd/protoc-gen-go@$pbver"
GOFLAGS=-mod=mod go install "connectrpc.com/connect/cmd/protoc-gen-connect-go@$cver"

mod=github.com/stacyvm/stacyvm
gen=internal/e2b/gen
maps="Mprocess.proto=$mod/$gen/process,Mfilesystem.proto=$mod/$gen/filesystem"
rm -rf "$gen"
mkdir -p "$gen"
PATH="$bin:$PATH" protoc -I "$src" -I /usr/include \
	--go_out=. --go_opt=module=$mod --go_opt="$maps" \
	--connect-go_out=. --connect-go_opt=module=$mod --connect-go_opt="$maps" \
	process.proto filesystem.proto
gofmt -l "$gen" | (! grep .) || { echo "gen-e2b: generated code is not gofmt-clean" >&2; exit 1; }
echo "gen-e2b: wrote $gen"
