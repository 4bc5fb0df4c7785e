#!/usr/bin/env bash
# postgres-down.sh: stop the cluster postgres-up.sh started, by the PID it
# recorded, and remove its directory. Idempotent.
set -euo pipefail

STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}
if [ -s "$STATE/postgres.pid" ]; then
	pid=$(cat "$STATE/postgres.pid")
	# SIGINT is PostgreSQL's fast shutdown: clients are disconnected.
	if kill -INT "$pid" 2>/dev/null; then
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -QUIT "$pid" 2>/dev/null || true
	fi
	rm -f "$STATE/postgres.pid"
fi
if [ -s "$STATE/postgres.dir" ]; then
	dir=$(cat "$STATE/postgres.dir")
	case $dir in
	/tmp/stacyvm-pg.*) rm -rf "$dir" ;;
	esac
	rm -f "$STATE/postgres.dir"
fi
rm -f "$STATE/postgres.dsn"
echo "postgres-down: stopped"
