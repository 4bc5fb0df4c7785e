#!/usr/bin/env bash
# runsc-build.sh start|wait|stop|shim: gVisor's runsc and its containerd shim
# (containerd-shim-runsc-v1, for the Kubernetes test cluster's gvisor
# RuntimeClass), built from source (Debian's 2022 package has no networking
# on this kernel) from one gVisor module version. The build is CPU-bound and
# takes about 3.7 minutes cold on 2 cores for runsc and 4 to 5 more for the
# shim (built from a patched copy of the module, see build_shim, so it shares
# no build cache with runsc), so it runs in the background while the network-
# and disk-bound setup steps (apt, debootstrap, image imports) proceed:
#
#   runsc-build.sh start   start the build in the background, if runsc or the
#                          shim is missing and no build is running; returns
#                          at once
#   runsc-build.sh wait    block until both exist: waits for a running
#                          build, or builds now; fails with the build log's
#                          tail
#   runsc-build.sh stop    stop a background build that is still running
#                          (scripts/test calls it on the way out)
#   runsc-build.sh shim    print the shim's path
#
# runsc goes where dockerd's daemon.json names it; the shim is cached by
# gVisor version under $STACYVM_CACHE/gvisor/<version>/, where k8s-up.sh's
# containerd config points (runtime_path), so a version change rebuilds it.
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
SHIM=$CACHE/gvisor/$RUNSC_VERSION/containerd-shim-runsc-v1
LOCK=$CACHE/runsc-build.lock
LOG=$CACHE/runsc-build.log
PIDFILE=$STATE/runsc-build.pid

mkdir -p "$CACHE" "$STATE"

have() { [ -x "$RUNSC" ] && [ -x "$SHIM" ]; }

# build_shim builds gVisor's shim from a copy of the module, with one
# change, and installs it behind a wrapper. Both adapt it to Debian 12's
# containerd 1.6 on machines like these:
#  - the shim sets its daemon's oom_score_adj to -999, which needs
#    CAP_SYS_RESOURCE, which root lacks here (containerd's
#    restrict_oom_score_adj in k8s-up.sh is the same problem); the copy sets
#    0 instead, containerd's own score.
#  - the shim answers `start` with the JSON bootstrap parameters of
#    containerd 1.7+ ({"version":2,"address":...}); containerd 1.6 wants the
#    bare address. The wrapper passes every call through and rewrites only
#    start's answer.
build_shim() {
	local dir mod src
	dir=$(dirname "$SHIM")
	src=$CACHE/gvisor/src-$RUNSC_VERSION
	mod=$(cd / && go mod download -json "gvisor.dev/gvisor@$RUNSC_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p') || return 1
	[ -d "$mod" ] || { echo "runsc-build: gvisor.dev/gvisor@$RUNSC_VERSION not downloaded"; return 1; }
	rm -rf "$src" && cp -r "$mod" "$src" && chmod -R u+w "$src" || return 1
	sed -i 's/^\([[:space:]]*oomScoreMax = \)-999$/\10/' "$src/pkg/shim/v1/manager.go"
	grep -q '^[[:space:]]*oomScoreMax = 0$' "$src/pkg/shim/v1/manager.go" ||
		{ echo "runsc-build: the shim's oomScoreMax is not where it was: check pkg/shim/v1/manager.go"; return 1; }
	mkdir -p "$dir" || return 1
	(cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$dir/runsc-shim.bin" ./shim) || return 1
	cat >"$SHIM.tmp" <<'EOF'
#!/bin/sh
# containerd-shim-runsc-v1 for containerd 1.6 (scripts/ci/runsc-build.sh):
# the real shim is runsc-shim.bin; `start` answers with the bare address.
real=$(dirname "$0")/runsc-shim.bin
for a; do last=$a; done
if [ "$last" = start ]; then
	out=$("$real" "$@") || exit
	printf '%s' "$out" | sed -n 's/.*"address":"\([^"]*\)".*/\1/p'
	exit 0
fi
exec "$real" "$@"
EOF
	chmod +x "$SHIM.tmp" && mv "$SHIM.tmp" "$SHIM"
}

# build runs under the lock: whoever holds it either builds or finds the
# binaries made by the previous holder.
build() {
	exec 9>"$LOCK"
	flock 9 || return 1
	have && return 0
	local t0 tmp
	t0=$(date +%s)
	echo "runsc-build: gVisor $RUNSC_VERSION ($(date -u +%T))" >"$LOG"
	# Called from `if`, where errexit is off: every failure returns.
	if [ ! -x "$RUNSC" ]; then
		echo "runsc-build: building runsc ($(date -u +%T))" >>"$LOG"
		(cd / && GOBIN=$(dirname "$RUNSC") CGO_ENABLED=0 \
			go install "gvisor.dev/gvisor/runsc@$RUNSC_VERSION") >>"$LOG" 2>&1 || return 1
		[ -x "$RUNSC" ] || return 1
	fi
	if [ ! -x "$SHIM" ]; then
		echo "runsc-build: building containerd-shim-runsc-v1 ($(date -u +%T))" >>"$LOG"
		build_shim >>"$LOG" 2>&1 || return 1
	fi
	echo "runsc-build: done ($(date -u +%T)) in $(($(date +%s) - t0)) s" >>"$LOG"
}

running() {
	local pid
	pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa runsc-build "/proc/$pid/cmdline" 2>/dev/null
}

case ${1:-} in
start)
	have && exit 0
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
shim)
	echo "$SHIM"
	;;
*)
	echo "usage: $0 start|wait|stop|shim" >&2
	exit 2
	;;
esac
