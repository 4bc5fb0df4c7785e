#!/usr/bin/env bash
# sdk-up.sh: install what the SDK suites need. Python runs on Debian's
# packages (Python's public index is not reachable from CI): httpx,
# websockets (terminals), pytest, pytest-asyncio and mypy (the SDK is
# checked with mypy --strict). The
# TypeScript SDK's toolchain comes from npm, pinned by
# sdk/typescript/package-lock.json (`npm ci`). Idempotent: what is
# installed is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."

now_ms() { date +%s%3N; }
t0=$(now_ms)
missing=()
for p in python3-httpx python3-websockets python3-pytest python3-pytest-asyncio mypy; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "sdk-up: apt-get install ${missing[*]}"
	apt-get update -qq || true
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "sdk-up: python packages ready in $(($(now_ms) - t0)) ms"

t0=$(now_ms)
lock=sdk/typescript/package-lock.json
stamp=sdk/typescript/node_modules/.stacyvm-lock.sha256
sum=$(sha256sum "$lock" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
	(cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error)
	echo "$sum" >"$stamp"
fi
echo "sdk-up: npm packages ready in $(($(now_ms) - t0)) ms"
