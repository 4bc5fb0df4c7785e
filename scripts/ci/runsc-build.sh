#!/usr/bin/env bash
# runsc-build.sh start|wait|stop: gVisor's runsc, built from source (Debian's
# 2022 package has no networking on this kernel). The build is CPU-bound and
# takes about 3.7 minutes cold on 2 cores, so it runs in the background while
# the network- and disk-bound setup steps (apt, debootstrap, image imports)
# proceed:
#
#   runsc-build.sh start   start the build in the background, if runsc is
#                          missing and no build is running; returns at once
#   runsc-build.sh wait    block until runsc exists: waits for a running
#                          build, or builds it now; fails with the build
#                          log's tail
#   runsc-build.sh stop    stop a background build that is still running
#                          (scripts/test calls it on the way out)
#
# A lock makes sure that concurrent callers build once. Nothing is left
# running once `wait` returns.
#
# Environment (all optional):
#   STACYVM_CACHE      build log and lock   (/var/cache/stacyvm)
#   STACYVM_CI_STATE   pid file             (/tmp/stacyvm-ci)
#   STACYVM_RUNSC      where runsc goes     (/usr/local/sbin/runsc; its
#                      directory is the GOBIN, so the name must be runsc)
set -euo pipefail

CACHE=${STACYVM_CACHE:-/var/cache/stacyvm}
STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}
RUNSC=${STACYVM_RUNSC:-/usr/local/sbin/runsc}
RUNSC_VERSION=v0.0.0-20260527191743-a81fd9dd382e
LOCK=$CACHE/runsc-build.lock
LOG=$CACHE/runsc-build.log
PIDFILE=$STATE/runsc-build.pid

mkdir -p "$CACHE" "$STATE"

# build runs under the lock: whoever holds it either builds or finds the
# binary made by the previous holder.
build() {
	exec 9>"$LOCK"
	flock 9 || return 1
	[ -x "$RUNSC" ] && return 0
	echo "runsc-build: building runsc $RUNSC_VERSION ($(date -u +%T))" >"$LOG"
	# Called from `if`, where errexit is off: every failure returns.
	(cd / && GOBIN=$(dirname "$RUNSC") CGO_ENABLED=0 \
		go install "gvisor.dev/gvisor/runsc@$RUNSC_VERSION") >>"$LOG" 2>&1 || return 1
	[ -x "$RUNSC" ] || return 1
	echo "runsc-build: done ($(date -u +%T))" >>"$LOG"
}

running() {
	local pid
	pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa runsc-build "/proc/$pid/cmdline" 2>/dev/null
}

case ${1:-} in
start)
	[ -x "$RUNSC" ] && exit 0
	running && exit 0
	# setsid: its own process group, so that stop can end the go command
	# and the compilers under it.
	setsid "$0" build </dev/null >/dev/null 2>&1 &
	echo $! >"$PIDFILE"
	echo "runsc-build: started in the background (log: $LOG)"
	;;
build)
	build
	;;
wait)
	if ! build; then
		echo "runsc-build: building runsc failed; last lines of $LOG:" >&2
		tail -20 "$LOG" >&2
		exit 1
	fi
	;;
stop)
	if running; then
		kill -TERM -- "-$(cat "$PIDFILE")" 2>/dev/null || true
	fi
	rm -f "$PIDFILE"
	;;
*)
	echo "usage: $0 start|wait|stop" >&2
	exit 2
	;;
esac
