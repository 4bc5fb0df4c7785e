#!/usr/bin/env bash
# sdk-test.sh: the SDK suites, each against a real `stacyvm serve` it
# starts itself (mock provider; the Docker smoke tests too when
# STACYVM_TEST_DOCKER=1). Builds stacyvm and stacyvm-agent once into a
# temporary directory for both. Python runs on Debian's interpreter and
# packages (/usr/bin/python3), TypeScript on node with tsc from the lockfile
# (Node 20 has its WebSocket, which terminals use, behind a flag).
# Run scripts/ci/sdk-up.sh first. Any failure (or a suite that collects
# nothing) fails the script.
set -euo pipefail
cd "$(dirname "$0")/../.."

now() { date +%s; }
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/stacyvm" ./cmd/stacyvm
CGO_ENABLED=0 go build -o "$bin/stacyvm-agent" ./cmd/stacyvm-agent
export STACYVM_BIN=$bin/stacyvm

t0=$(now)
echo "sdk-test: python (sdk/python): mypy --strict, then pytest"
(cd sdk/python && /usr/bin/python3 -m mypy --strict stacyvm)
# pytest exits 0 only when every collected test passed; 5 (nothing
# collected) is a failure too.
(cd sdk/python && /usr/bin/python3 -m pytest -p no:cacheprovider -W error::RuntimeWarning -rs tests) || {
	echo "sdk-test: python suite FAILED (pytest exit $?)" >&2
	exit 1
}
echo "sdk-test: python suite passed in $(($(now) - t0)) s"

t0=$(now)
echo "sdk-test: typescript (sdk/typescript)"
(cd sdk/typescript && npx --no-install tsc -p . && node --experimental-websocket --test test/*.test.mjs) || {
	echo "sdk-test: typescript suite FAILED" >&2
	exit 1
}
echo "sdk-test: typescript suite passed in $(($(now) - t0)) s"
