#!/usr/bin/env bash
# docker-down.sh: undo the running parts of docker-up.sh. Idempotent.
#
#   docker-down.sh            remove test containers and networks (label
#                             stacyvm.test), stop the registry and dockerd
#                             started by docker-up
#   docker-down.sh --all      also remove every StacyVM sandbox container
#                             (label stacyvm.sandbox-id), not just the tests'
#   docker-down.sh --images   also remove the stacyvm/*:test images (the
#                             Debian rootfs tarball stays cached)
#   docker-down.sh --keep-daemon  remove the test containers and networks
#                             only; the registry and dockerd keep running
#                             (scripts/test, when they ran before it did)
#
# Only processes whose PIDs docker-up.sh recorded are stopped; a dockerd that
# someone else started is left running.
set -euo pipefail

STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}
DOCKER=/usr/bin/docker
export DOCKER_HOST=unix:///var/run/docker.sock

all=0 images=0 keep=0
for a in "$@"; do
	case $a in
	--all) all=1 ;;
	--images) images=1 ;;
	--keep-daemon) keep=1 ;;
	*) echo "usage: $0 [--all] [--images] [--keep-daemon]" >&2; exit 2 ;;
	esac
done

now_ms() { date +%s%3N; }
step() {
	CURRENT=$1
	shift
	local t0
	t0=$(now_ms)
	"$@"
	printf 'docker-down: %-20s %6d ms\n' "$CURRENT" $(($(now_ms) - t0))
	CURRENT=
}
# Steps run with errexit in force (calling them from an || list would turn it
# off inside them); a failing one is named on the way out.
CURRENT=
trap 'rc=$?; if [ $rc -ne 0 ] && [ -n "$CURRENT" ]; then echo "docker-down: step $CURRENT FAILED (exit $rc)" >&2; fi' EXIT

# stop_pid NAME PIDFILE: TERM the recorded process, wait, then KILL it.
stop_pid() {
	local name=$1 file=$2 pid
	[ -f "$file" ] || return 0
	pid=$(cat "$file")
	# The PID may have been reused since; only signal it if it is still the
	# program we started.
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa "$name" "/proc/$pid/cmdline" 2>/dev/null; then
		kill -TERM "$pid"
		for _ in $(seq 1 150); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	fi
	rm -f "$file"
}

remove_containers() {
	"$DOCKER" info >/dev/null 2>&1 || return 0
	local filter=label=stacyvm.test ids
	[ $all = 1 ] && filter=label=stacyvm.sandbox-id
	ids=$("$DOCKER" ps -aq --filter "$filter")
	if [ -n "$ids" ]; then
		echo "docker-down: removing $(echo "$ids" | wc -l) container(s)"
		# shellcheck disable=SC2086
		"$DOCKER" rm -f $ids >/dev/null
	fi
	"$DOCKER" network prune -f --filter label=stacyvm.test >/dev/null
}

remove_images() {
	[ $images = 1 ] || return 0
	"$DOCKER" info >/dev/null 2>&1 || return 0
	"$DOCKER" image rm -f stacyvm/busybox:test stacyvm/debian:test >/dev/null 2>&1 || true
}

step containers remove_containers
step images remove_images
[ $keep = 1 ] && exit 0
step registry stop_pid docker-registry "$STATE/registry.pid"
rm -rf "$STATE/registry-data"
step dockerd stop_pid dockerd "$STATE/dockerd.pid"
