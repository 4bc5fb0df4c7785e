#!/usr/bin/env bash
# postgres-up.sh: a private PostgreSQL cluster for the tests of the
# PostgreSQL store and of several replicas on one store.
#
# It installs Debian's postgresql (15) when missing, then initdb's a cluster
# in a new temporary directory as an unprivileged user (the package's
# `postgres` user when run as root, else the caller), with a random password
# (scram-sha-256 over TCP), and starts it with pg_ctl on a free loopback port.
# Nothing listens beyond 127.0.0.1.
#
# It writes, under $STACYVM_CI_STATE (/tmp/stacyvm-ci):
#   postgres.dsn   the connection URL (password included: mode 0600)
#   postgres.pid   the postmaster's PID, which postgres-down.sh stops
#   postgres.dir   the cluster's directory, which postgres-down.sh removes
#
# Then: STACYVM_TEST_POSTGRES_DSN=$(cat /tmp/stacyvm-ci/postgres.dsn) go test ./internal/store/postgres/...
set -euo pipefail

STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}
mkdir -p "$STATE"

if [ -s "$STATE/postgres.pid" ] && kill -0 "$(cat "$STATE/postgres.pid")" 2>/dev/null; then
	echo "postgres-up: already running (pid $(cat "$STATE/postgres.pid")); $STATE/postgres.dsn"
	exit 0
fi

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/initdb" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "postgres-up: PostgreSQL is not installed and this is not root: apt-get install postgresql" >&2
		exit 1
	fi
	echo "postgres-up: installing postgresql"
	# The package's own cluster is not wanted: only the binaries.
	mkdir -p /etc/postgresql-common
	grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
		echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql >"$STATE/postgres-apt.log" 2>&1 || {
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$STATE/postgres-apt.log" 2>&1
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql >>"$STATE/postgres-apt.log" 2>&1
	}
fi
BIN=$(bindir)

# The cluster runs as an unprivileged user: PostgreSQL refuses root anyway.
as_user=()
owner=$(id -un)
if [ "$(id -u)" = 0 ]; then
	owner=postgres
	as_user=(runuser -u postgres --)
fi

dir=$(mktemp -d /tmp/stacyvm-pg.XXXXXX)
chown "$owner" "$dir"
chmod 0700 "$dir"
pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
pwfile=$dir/pw
printf '%s\n' "$pw" >"$pwfile"
chown "$owner" "$pwfile"

"${as_user[@]}" "$BIN/initdb" -D "$dir/data" -U stacyvm --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
	--auth-host=scram-sha-256 --auth-local=scram-sha-256 >"$STATE/postgres-initdb.log" 2>&1
rm -f "$pwfile"

# A free loopback port: one nothing answers on (another cluster of a
# parallel run, a developer's server).
port=
for _ in $(seq 50); do
	p=$((20000 + RANDOM % 40000))
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		port=$p
		break
	fi
done
[ -n "$port" ] || { echo "postgres-up: no free port found" >&2; exit 1; }

# fsync off: a throwaway test cluster need not survive a power loss.
"${as_user[@]}" "$BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
	-o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
	start >"$STATE/postgres-start.log" 2>&1 || {
	cat "$STATE/postgres-start.log" "$dir/postgres.log" >&2 || true
	exit 1
}
pid=$(head -n 1 "$dir/data/postmaster.pid")
echo "$pid" >"$STATE/postgres.pid"
echo "$dir" >"$STATE/postgres.dir"

PGPASSWORD=$pw "$BIN/psql" -h 127.0.0.1 -p "$port" -U stacyvm -d postgres -v ON_ERROR_STOP=1 -q \
	-c 'CREATE DATABASE stacyvm' >/dev/null
umask 077
echo "postgres://stacyvm:$pw@127.0.0.1:$port/stacyvm?sslmode=disable" >"$STATE/postgres.dsn"
echo "postgres-up: PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (pid $pid, dir $dir); DSN in $STATE/postgres.dsn"
