#!/usr/bin/env bash
# docker-up.sh: make a working Docker engine with runc, crun and gVisor runsc,
# the local test images and a loopback registry available on this machine.
#
# Idempotent: every step checks before it acts, so a second run on a warm
# machine takes about a second. Used by .ci/run and by developers; undo the
# running parts with docker-down.sh.
#
# Environment (all optional):
#   STACYVM_CI_STATE   pid files, logs, registry data   (/tmp/stacyvm-ci)
#   STACYVM_CACHE      runsc build log, rootfs tarballs (/var/cache/stacyvm)
#   STACYVM_REGISTRY   host:port for the test registry  (127.0.0.1:5000)
#   STACYVM_SKIP_DEBIAN=1  skip the Debian image (saves ~40 s cold)
set -euo pipefail

STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}
CACHE=${STACYVM_CACHE:-/var/cache/stacyvm}
REGISTRY=${STACYVM_REGISTRY:-127.0.0.1:5000}
RUNSC=/usr/local/sbin/runsc
HERE=$(cd "$(dirname "$0")" && pwd)
# Debian's docker CLI matches the daemon's API (1.41); a newer CLI earlier on
# PATH would work too, but pinning avoids surprises.
DOCKER=/usr/bin/docker
export DOCKER_HOST=unix:///var/run/docker.sock

mkdir -p "$STATE" "$CACHE"

now_ms() { date +%s%3N; }
step() {
	CURRENT=$1
	shift
	local t0
	t0=$(now_ms)
	"$@"
	printf 'docker-up: %-22s %6d ms\n' "$CURRENT" $(($(now_ms) - t0))
	CURRENT=
}
# Steps run with errexit in force (calling them from an || list would turn it
# off inside them); a failing one is named on the way out.
CURRENT=
# A failed run leaves no runsc build behind in the background.
trap 'rc=$?; if [ $rc -ne 0 ]; then [ -z "$CURRENT" ] || echo "docker-up: step $CURRENT FAILED (exit $rc)" >&2; "$HERE/runsc-build.sh" stop; fi' EXIT

install_packages() {
	local want=(docker.io containerd runc crun iptables debootstrap docker-registry busybox-static) missing=()
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "docker-up: installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1 ||
		{ apt-get update >>"$STATE/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1; } ||
		{ tail -20 "$STATE/apt.log" >&2; return 1; }
}

# gVisor's runsc is built from source by runsc-build.sh, in the background
# while the other steps run; only its smoke test waits for it.
wait_runsc() { "$HERE/runsc-build.sh" wait; }

# crun refuses to start containers under cgroup v1 unless a hugetlb hierarchy
# is mounted, and this host does not mount one.
mount_hugetlb() {
	mountpoint -q /sys/fs/cgroup/hugetlb && return 0
	mkdir -p /sys/fs/cgroup/hugetlb
	mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
}

# Writes daemon.json; returns 0 and sets CONFIG_CHANGED=1 when it changed.
CONFIG_CHANGED=0
write_daemon_json() {
	local want
	# runsc --host-uds=create lets the agent create its listening unix socket
	# in the bind-mounted /run/stacyvm as a real host socket the host can
	# connect to; without it the socket exists only inside the sandbox
	# (docs/docker.md). "create" is the least that works: sandboxes still
	# cannot connect to host sockets.
	want=$(
		cat <<EOF
{
  "runtimes": {
    "runsc": {"path": "$RUNSC", "runtimeArgs": ["--host-uds=create"]},
    "crun": {"path": "/usr/bin/crun"}
  }
}
EOF
	)
	mkdir -p /etc/docker
	if [ -f /etc/docker/daemon.json ] && [ "$(cat /etc/docker/daemon.json)" = "$want" ]; then
		return 0
	fi
	printf '%s\n' "$want" >/etc/docker/daemon.json
	CONFIG_CHANGED=1
}

docker_ready() { "$DOCKER" info >/dev/null 2>&1; }

start_dockerd() {
	if docker_ready; then
		# dockerd reloads "runtimes" on SIGHUP, so a config change needs no
		# restart (and no disruption of anyone else's containers).
		if [ "$CONFIG_CHANGED" = 1 ]; then
			local pid
			pid=$(cat "$STATE/dockerd.pid" 2>/dev/null || pidof dockerd || true)
			[ -n "$pid" ] && kill -HUP "$pid"
			sleep 0.2
		fi
		return 0
	fi
	# setsid: dockerd must outlive this script and not get its job-control
	# signals.
	setsid dockerd >"$STATE/dockerd.log" 2>&1 </dev/null &
	echo $! >"$STATE/dockerd.pid"
	for _ in $(seq 1 300); do
		docker_ready && return 0
		kill -0 "$(cat "$STATE/dockerd.pid")" 2>/dev/null || break
		sleep 0.1
	done
	echo "docker-up: dockerd did not become ready; last log lines:" >&2
	tail -20 "$STATE/dockerd.log" >&2
	return 1
}

build_busybox_image() {
	"$DOCKER" image inspect stacyvm/busybox:test >/dev/null 2>&1 && return 0
	local b
	b=$(mktemp -d)
	mkdir -p "$b"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,root}
	cp /bin/busybox "$b/bin/" && chroot "$b" /bin/busybox --install -s
	echo 'root:x:0:0:root:/root:/bin/sh' >"$b/etc/passwd"
	echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh' >>"$b/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$b/etc/group"
	chmod 1777 "$b/tmp"
	tar -C "$b" -c . | "$DOCKER" import -c 'CMD ["/bin/sh"]' - stacyvm/busybox:test >/dev/null
	rm -rf "$b"
}

# The Debian rootfs is cached as a tarball: debootstrap is ~35 s, import ~3 s.
build_debian_image() {
	"$DOCKER" image inspect stacyvm/debian:test >/dev/null 2>&1 && return 0
	local tarball=$CACHE/debian-bookworm-minbase-python3.tar
	if [ ! -s "$tarball" ]; then
		local d
		d=$(mktemp -d)
		debootstrap --variant=minbase --include=python3 bookworm "$d" http://deb.debian.org/debian \
			>"$STATE/debootstrap.log" 2>&1 || { tail -20 "$STATE/debootstrap.log" >&2; rm -rf "$d"; return 1; }
		rm -rf "$d"/var/cache/apt/archives/*.deb "$d"/var/lib/apt/lists/*
		tar -C "$d" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
		rm -rf "$d"
	fi
	"$DOCKER" import -c 'CMD ["/bin/bash"]' "$tarball" stacyvm/debian:test >/dev/null
}

# A loopback registry (Debian's docker-registry) so the pull path can be
# tested without the internet. Docker trusts 127.0.0.0/8 over plain HTTP.
start_registry() {
	if [ -f "$STATE/registry.pid" ] && kill -0 "$(cat "$STATE/registry.pid")" 2>/dev/null; then
		return 0
	fi
	mkdir -p "$STATE/registry-data"
	cat >"$STATE/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/registry-data
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
	setsid docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 </dev/null &
	echo $! >"$STATE/registry.pid"
	local host=${REGISTRY%:*} port=${REGISTRY##*:}
	for _ in $(seq 1 100); do
		# bash's /dev/tcp: no curl needed on a fresh machine.
		(exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "docker-up: registry did not answer on $REGISTRY" >&2
	tail -20 "$STATE/registry.log" >&2
	return 1
}

# smoke RUNTIME: one real container per runtime, so a broken runtime fails
# here with its own error rather than deep inside a test.
smoke() {
	"$DOCKER" run --rm --runtime "$1" --network none stacyvm/busybox:test /bin/true
}

T0=$(now_ms)
# dockerd does not look at a runtime's binary before a container uses it, so
# everything but the runsc smoke test can go ahead while runsc builds.
"$HERE/runsc-build.sh" start
step apt-packages install_packages
step hugetlb-mount mount_hugetlb
step daemon-json write_daemon_json
step dockerd start_dockerd
step image-busybox build_busybox_image
if [ "${STACYVM_SKIP_DEBIAN:-}" != 1 ]; then
	step image-debian build_debian_image
fi
step registry start_registry
step smoke-runc smoke runc
step smoke-crun smoke crun
step runsc-build wait_runsc
step smoke-runsc smoke runsc
printf 'docker-up: %-22s %6d ms\n' total $(($(now_ms) - T0))
echo "docker-up: ready (dockerd pid $(cat "$STATE/dockerd.pid" 2>/dev/null || echo '?'), registry $REGISTRY)"
