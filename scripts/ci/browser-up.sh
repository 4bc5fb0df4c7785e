#!/usr/bin/env bash
# browser-up.sh: install Debian's headless Chromium for the browser tests
# (internal/browsertest: real cross-origin attacks on the API, the
# dashboard). Idempotent: nothing is installed when chromium is present.
# Nothing is left running.
#
# Environment (all optional):
#   STACYVM_CI_STATE   logs   (/tmp/stacyvm-ci)
#
# Then: STACYVM_TEST_BROWSER=1 go test ./internal/browsertest/... ./internal/api/...
set -euo pipefail

STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}
mkdir -p "$STATE"

now_ms() { date +%s%3N; }
step() {
	local name=$1 t0 rc=0
	shift
	t0=$(now_ms)
	"$@" || rc=$?
	printf 'browser-up: %-16s %6d ms%s\n' "$name" $(($(now_ms) - t0)) "$([ $rc -eq 0 ] || echo " FAILED ($rc)")"
	return $rc
}

install_packages() {
	dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q 'install ok installed' && return 0
	echo "browser-up: installing chromium"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >"$STATE/browser-apt.log" 2>&1 ||
		{ apt-get update >>"$STATE/browser-apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >>"$STATE/browser-apt.log" 2>&1; } ||
		{ tail -20 "$STATE/browser-apt.log" >&2; return 1; }
}

smoke() {
	chromium --version
}

T0=$(now_ms)
step apt-packages install_packages
step smoke smoke
printf 'browser-up: %-16s %6d ms\n' total $(($(now_ms) - T0))
