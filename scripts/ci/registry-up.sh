#!/usr/bin/env bash
# registry-up.sh: a loopback image registry for the environment builds'
# registry target (Debian's docker-registry), with htpasswd authentication
# so that the tests prove the configured credentials are used. dockerd
# treats 127.0.0.0/8 registries as insecure (plain HTTP) by default.
#
# It installs docker-registry when missing, then starts it and writes,
# under $STACYVM_CI_STATE/envs-registry (/tmp/stacyvm-ci/envs-registry):
#   address    host:port it listens on ($STACYVM_ENV_REGISTRY, 127.0.0.1:5055)
#   user       the user name
#   password   a random password (mode 0600)
#   pid        the registry's PID, which registry-down.sh stops
#
# Then: STACYVM_TEST_REGISTRY_DIR=/tmp/stacyvm-ci/envs-registry go test ./cmd/stacyvm/ -run Registry
set -euo pipefail

STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}/envs-registry
ADDR=${STACYVM_ENV_REGISTRY:-127.0.0.1:5055}
mkdir -p "$STATE"

if [ -s "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
	echo "registry-up: already running (pid $(cat "$STATE/pid")) on $(cat "$STATE/address")"
	exit 0
fi

if ! command -v docker-registry >/dev/null; then
	if [ "$(id -u)" != 0 ]; then
		echo "registry-up: docker-registry is not installed and this is not root: apt-get install docker-registry" >&2
		exit 1
	fi
	echo "registry-up: installing docker-registry"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry >"$STATE/apt.log" 2>&1 ||
		{ apt-get update >>"$STATE/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry >>"$STATE/apt.log" 2>&1; } ||
		{ tail -20 "$STATE/apt.log" >&2; exit 1; }
	# The package starts its own service on :5000; this script runs its own.
	if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
		systemctl stop docker-registry || true
	fi
fi

user=stacyvm
umask 077
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$STATE/password"
echo "$user" >"$STATE/user"
# bcrypt, the only hash the registry's htpasswd accepts.
python3 -W ignore::DeprecationWarning - "$user" "$STATE/password" >"$STATE/htpasswd" <<'PY'
import crypt, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
user, path = sys.argv[1], sys.argv[2]
print(f"{user}:{crypt.crypt(open(path).read().strip(), crypt.mksalt(crypt.METHOD_BLOWFISH))}")
PY
umask 022
mkdir -p "$STATE/data"
cat >"$STATE/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/data
  delete:
    enabled: true
auth:
  htpasswd:
    realm: stacyvm-test
    path: $STATE/htpasswd
http:
  addr: $ADDR
YML
setsid docker-registry serve "$STATE/config.yml" >"$STATE/log" 2>&1 </dev/null &
echo $! >"$STATE/pid"
echo "$ADDR" >"$STATE/address"

# Ready when /v2/ answers (401: authentication required).
for _ in $(seq 100); do
	if code=$(python3 -c 'import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen("http://" + sys.argv[1] + "/v2/", timeout=1)
    print(200)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    sys.exit(1)' "$ADDR" 2>/dev/null) && [ "$code" = 401 ]; then
		echo "registry-up: registry on $ADDR (pid $(cat "$STATE/pid")); credentials in $STATE"
		exit 0
	fi
	kill -0 "$(cat "$STATE/pid")" 2>/dev/null || break
	sleep 0.1
done
echo "registry-up: the registry did not come up; log:" >&2
tail -20 "$STATE/log" >&2
exit 1
