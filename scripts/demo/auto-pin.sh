#!/usr/bin/env bash
# auto-pin.sh [STACYVM_BINARY]: shows that `auto` never downgrades isolation.
#
# It serves with provider.default auto over docker and proot, reaching
# dockerd through a unix-socket proxy it can kill; spawns once with docker
# healthy, kills the proxy (docker now unreachable) and spawns again.
# A server before issue 9 answers the second spawn 201 on proot (commands
# on the host); the current one answers 503 naming docker. Needs a running
# dockerd, proot, the stacyvm/busybox:test image and curl; the binary's
# directory must hold stacyvm-agent (scripts/serve builds both into bin/).
set -u
BIN=${1:-$(cd "$(dirname "$0")/../.." && pwd)/bin/stacyvm}
PORT=${PORT:-7499}
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d)
proxy() { /usr/bin/python3 "$HERE/docker-proxy.py" "$D/docker.sock" /var/run/docker.sock & PROXY=$!; sleep 0.5; }
proxy
cat >"$D/stacyvm.yaml" <<Y
server: {listen: 127.0.0.1:$PORT}
store: {path: $D/stacyvm.db}
provider: {default: auto, enabled: [docker, proot]}
docker: {host: unix://$D/docker.sock}
Y
(cd "$D" && exec "$BIN" serve --config "$D/stacyvm.yaml" >"$D/serve.log" 2>&1) &
SRV=$!
for _ in $(seq 50); do curl -sf "localhost:$PORT/api/v1/health" >/dev/null && break; sleep 0.2; done
ids=()
spawn() {
	local out id
	out=$(curl -s -w '\nHTTP %{http_code}' -X POST "localhost:$PORT/api/v1/sandboxes" \
		-H 'Content-Type: application/json' -d '{"image":"stacyvm/busybox:test","ttl":"2m"}')
	echo "$out" | tail -1
	echo "$out" | head -1 | grep -oE '"(provider|code|message)":"([^"\\]|\\.)*"' | tr '\n' ' '
	echo
	id=$(echo "$out" | grep -o '"id":"sb-[0-9a-f]*"' | cut -d'"' -f4)
	[ -n "$id" ] && ids+=("$id")
}
echo "== docker healthy:"
spawn
kill "$PROXY"
wait "$PROXY" 2>/dev/null
echo "== docker unreachable:"
spawn
proxy
for id in "${ids[@]}"; do curl -s -o /dev/null -X DELETE "localhost:$PORT/api/v1/sandboxes/$id"; done
kill "$SRV" "$PROXY"
wait "$SRV" 2>/dev/null
rm -rf "$D"
