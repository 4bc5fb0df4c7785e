#!/usr/bin/env bash
# k8s-build.sh start|wait|stop|bindir: kube-apiserver and kubelet, built from
# the k8s.io/kubernetes Go module (no installer or release binary can be
# downloaded here; the Go module proxy works). The build is CPU-bound and
# takes about 10 minutes cold on 2 idle cores, so scripts/test starts it in
# the background, like runsc-build.sh:
#
#   k8s-build.sh start    start the build in the background if the binaries
#                         are missing and no build is running; returns at once
#   k8s-build.sh wait     block until the binaries exist: waits for a running
#                         build, or builds now; fails with the log's tail
#   k8s-build.sh stop     stop a background build that is still running
#   k8s-build.sh bindir   print the directory holding the binaries
#
# k8s.io/kubernetes is not meant to be required by another module: its go.mod
# replaces each k8s.io staging module with ./staging/src/..., which a
# requiring module does not inherit. So the build happens in a throwaway
# module that requires k8s.io/kubernetes and replaces every one of those
# staging modules with its published release (v0.<minor>.<patch>), the list
# read from kubernetes' own go.mod so that it stays right across versions.
#
# The binaries are cached by version under $STACYVM_CACHE/k8s/<version>/, so
# warm runs skip the build. The build runs under nice and with a limited
# package parallelism (STACYVM_K8S_BUILD_JOBS, default 1) so that the machine
# stays usable meanwhile.
#
# Environment (all optional):
#   STACYVM_CACHE           cache root           (/var/cache/stacyvm)
#   STACYVM_CI_STATE        pid file             (/tmp/stacyvm-ci)
#   STACYVM_K8S_VERSION     kubernetes version   (v1.34.4)
#   STACYVM_K8S_BUILD_JOBS  go build -p          (1)
set -euo pipefail

CACHE=${STACYVM_CACHE:-/var/cache/stacyvm}
STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}
VERSION=${STACYVM_K8S_VERSION:-v1.34.4}
JOBS=${STACYVM_K8S_BUILD_JOBS:-1}
BIN=$CACHE/k8s/$VERSION
LOCK=$CACHE/k8s-build.lock
LOG=$CACHE/k8s-build.log
PIDFILE=$STATE/k8s-build.pid
COMMANDS=(kube-apiserver kubelet)

mkdir -p "$CACHE" "$STATE"

have() {
	local c
	for c in "${COMMANDS[@]}"; do
		[ -x "$BIN/$c" ] || return 1
	done
}

# build runs under the lock: whoever holds it either builds or finds the
# binaries made by the previous holder. Called from `if`, where errexit is
# off, so every step checks its own failure.
build() {
	exec 9>"$LOCK"
	flock 9 || return 1
	have && return 0
	local t0 src staging minor ldflags c
	t0=$(date +%s)
	echo "k8s-build: building kubernetes $VERSION (${COMMANDS[*]}) at $(date -u +%T), -p $JOBS" >"$LOG"
	src=$CACHE/k8s/src-$VERSION
	rm -rf "$src"
	mkdir -p "$src" "$BIN" || return 1
	# kubernetes' go.mod, to read the staging modules it replaces.
	local gomod
	gomod=$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$VERSION" |
		sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p') || return 1
	[ -f "$gomod" ] || { echo "k8s-build: no go.mod for k8s.io/kubernetes@$VERSION" >>"$LOG"; return 1; }
	staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$gomod")
	[ -n "$staging" ] || { echo "k8s-build: no staging replaces in $gomod" >>"$LOG"; return 1; }
	minor=v0.${VERSION#v1.}
	{
		echo "module stacyvm.local/k8sbuild"
		echo
		# The same language version and GODEBUG defaults as kubernetes itself.
		sed -n -e '/^go [0-9]/p' -e '/^godebug /p' "$gomod"
		echo
		echo "require k8s.io/kubernetes $VERSION"
		echo
		echo "replace ("
		for m in $staging; do
			echo "	$m => $m $minor"
		done
		echo ")"
	} >"$src/go.mod"
	{
		echo "//go:build tools"
		echo
		echo "package k8sbuild"
		echo
		echo "import ("
		for c in "${COMMANDS[@]}"; do
			echo "	_ \"k8s.io/kubernetes/cmd/$c\""
		done
		echo ")"
	} >"$src/tools.go"
	echo "k8s-build: $(echo "$staging" | wc -l) staging modules replaced with $minor" >>"$LOG"
	(cd "$src" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod tidy) >>"$LOG" 2>&1 || return 1
	# The version the binaries report (the apiserver's /version, kubelet's
	# node status); without it they say v0.0.0-master.
	ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$VERSION"
	ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
	ldflags+=" -X k8s.io/component-base/version.gitMinor=$(echo "$VERSION" | cut -d. -f2)"
	ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
	for c in "${COMMANDS[@]}"; do
		echo "k8s-build: go build $c ($(date -u +%T))" >>"$LOG"
		(cd "$src" && CGO_ENABLED=0 GOTOOLCHAIN=local nice -n 10 \
			go build -p "$JOBS" -trimpath -ldflags "$ldflags" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c") \
			>>"$LOG" 2>&1 || return 1
		mv "$BIN/$c.tmp" "$BIN/$c" || return 1
	done
	echo "k8s-build: done at $(date -u +%T) in $(($(date +%s) - t0)) s" >>"$LOG"
}

running() {
	local pid
	pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa k8s-build "/proc/$pid/cmdline" 2>/dev/null
}

case ${1:-} in
start)
	have && exit 0
	running && exit 0
	# setsid: its own process group, so that stop can end the go command
	# and the compilers under it.
	setsid "$0" build </dev/null >/dev/null 2>&1 &
	echo $! >"$PIDFILE"
	echo "k8s-build: started in the background (log: $LOG)"
	;;
build)
	build
	;;
wait)
	if ! build; then
		echo "k8s-build: building kubernetes $VERSION failed; last lines of $LOG:" >&2
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
bindir)
	echo "$BIN"
	;;
*)
	echo "usage: $0 start|wait|stop|bindir" >&2
	exit 2
	;;
esac
