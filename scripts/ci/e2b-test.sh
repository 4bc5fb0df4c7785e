#!/usr/bin/env bash
# scripts/ci/e2b-test.sh: the E2B compatibility suite (test/e2b): the
# unchanged `e2b` SDK from npm, at the version package-lock.json pins,
# against a real `stacyvm serve` that the suite builds and starts itself.
# `npm ci` makes node_modules exactly the lock file's every time
# (idempotent); each step says how long it took. Docker and PRoot run too
# when STACYVM_TEST_DOCKER=1 and STACYVM_TEST_PROOT=1 (scripts/test sets both).
set -euo pipefail
cd "$(dirname "$0")/../../test/e2b"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "e2b-test: installing Node.js and npm (Debian packages)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm
fi
# The SDK needs Node 20.18.1 or later (its package.json engines).
if ! node -e 'const [a,b,c]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&(b>18||(b===18&&c>=1)))?0:1)'; then
	echo "e2b-test: Node $(node --version) is too old for the e2b SDK: 20.18.1 or later is needed" >&2
	exit 1
fi

t=$(date +%s)
npm ci --no-audit --no-fund --loglevel=error
echo "e2b-test: npm ci done in $(($(date +%s) - t)) s (e2b $(node -p 'require("./node_modules/e2b/package.json").version'))"
t=$(date +%s)
node --test --test-concurrency=1 e2b.test.mjs
echo "e2b-test: suite done in $(($(date +%s) - t)) s"
