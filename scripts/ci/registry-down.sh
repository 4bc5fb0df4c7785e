#!/usr/bin/env bash
# registry-down.sh: stop the registry registry-up.sh started, by the PID it
# recorded, and remove its data and credentials. Idempotent.
set -euo pipefail

STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}/envs-registry
if [ -s "$STATE/pid" ]; then
	pid=$(cat "$STATE/pid")
	if kill "$pid" 2>/dev/null; then
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
	fi
fi
case $STATE in
*/envs-registry) rm -rf "$STATE" ;;
esac
echo "registry-down: stopped"
