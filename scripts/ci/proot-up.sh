#!/usr/bin/env bash
# proot-up.sh: install PRoot and make the root file system directories the
# PRoot provider's tests (and a local server) spawn as images:
#
#   $IMAGES/stacyvm_busybox_test   image "stacyvm/busybox:test" (static busybox, < 0.1 s)
#   $IMAGES/stacyvm_debian_test    image "stacyvm/debian:test"  (Debian bookworm minbase + python3)
#
# Idempotent: a step whose result exists is skipped. The Debian tree comes
# from the same cached tarball docker-up.sh imports as stacyvm/debian:test
# (debootstrap runs only when neither script made it yet), so the two
# providers test the same userland. Nothing is left running.
#
# Environment (all optional):
#   STACYVM_PROOT_IMAGES   images directory            (/var/lib/stacyvm/images)
#   STACYVM_CACHE          rootfs tarball cache         (/var/cache/stacyvm)
#   STACYVM_CI_STATE       logs                         (/tmp/stacyvm-ci)
#   STACYVM_SKIP_DEBIAN=1  skip the Debian image (saves ~40 s cold)
#
# Then: STACYVM_TEST_PROOT=1 STACYVM_PROOT_IMAGES=$IMAGES go test ./internal/provider/proot/... ./internal/provider/custom/...
set -euo pipefail

IMAGES=${STACYVM_PROOT_IMAGES:-/var/lib/stacyvm/images}
CACHE=${STACYVM_CACHE:-/var/cache/stacyvm}
STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}
DEBIAN_TAR=$CACHE/debian-bookworm-minbase-python3.tar

mkdir -p "$IMAGES" "$CACHE" "$STATE"

now_ms() { date +%s%3N; }
step() {
	local name=$1 t0 rc=0
	shift
	t0=$(now_ms)
	"$@" || rc=$?
	printf 'proot-up: %-16s %6d ms%s\n' "$name" $(($(now_ms) - t0)) "$([ $rc -eq 0 ] || echo " FAILED ($rc)")"
	return $rc
}

install_packages() {
	local want=(proot busybox-static) missing=()
	[ "${STACYVM_SKIP_DEBIAN:-}" = 1 ] || [ -s "$DEBIAN_TAR" ] || want+=(debootstrap)
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "proot-up: installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$STATE/proot-apt.log" 2>&1 ||
		{ apt-get update >>"$STATE/proot-apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$STATE/proot-apt.log" 2>&1; } ||
		{ tail -20 "$STATE/proot-apt.log" >&2; return 1; }
}

# Each image is built in a hidden directory (never listed as an image) and
# renamed into place, so an interrupted run never leaves half an image.
build_busybox() {
	local dst=$IMAGES/stacyvm_busybox_test tmp
	[ -d "$dst" ] && return 0
	tmp=$(mktemp -d "$IMAGES/.busybox.XXXXXX")
	mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev/shm,tmp,etc,root,workspace,run/stacyvm}
	cp /bin/busybox "$tmp/bin/busybox"
	# Applet links without chroot, so this also works for a user who is not
	# root.
	local applet
	for applet in $(/bin/busybox --list); do
		[ "$applet" = busybox ] || ln -sf busybox "$tmp/bin/$applet"
	done
	echo 'root:x:0:0:root:/root:/bin/sh' >"$tmp/etc/passwd"
	echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh' >>"$tmp/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/etc/group"
	chmod 1777 "$tmp/tmp" "$tmp/dev/shm"
	chmod 0755 "$tmp"
	mv "$tmp" "$dst"
}

build_debian() {
	local dst=$IMAGES/stacyvm_debian_test tmp
	[ -d "$dst" ] && return 0
	if [ ! -s "$DEBIAN_TAR" ]; then
		# The same recipe as docker-up.sh, so whichever runs first fills
		# the cache for both.
		local d
		d=$(mktemp -d)
		debootstrap --variant=minbase --include=python3 bookworm "$d" http://deb.debian.org/debian \
			>"$STATE/debootstrap.log" 2>&1 || { tail -20 "$STATE/debootstrap.log" >&2; rm -rf "$d"; return 1; }
		rm -rf "$d"/var/cache/apt/archives/*.deb "$d"/var/lib/apt/lists/*
		mkdir -p "$d/workspace" "$d/run/stacyvm"
		tar -C "$d" -cf "$DEBIAN_TAR.tmp" . && mv "$DEBIAN_TAR.tmp" "$DEBIAN_TAR"
		rm -rf "$d"
	fi
	tmp=$(mktemp -d "$IMAGES/.debian.XXXXXX")
	# --no-same-owner is tar's default for a user who is not root, and
	# keeps the image readable by that user.
	tar -C "$tmp" -xf "$DEBIAN_TAR"
	mkdir -p "$tmp/workspace" "$tmp/run/stacyvm"
	chmod 0755 "$tmp"
	mv "$tmp" "$dst"
}

smoke() {
	proot -w / -r "$IMAGES/stacyvm_busybox_test" /bin/sh -c 'test "$(echo ok)" = ok'
}

T0=$(now_ms)
step apt-packages install_packages
step image-busybox build_busybox
if [ "${STACYVM_SKIP_DEBIAN:-}" != 1 ]; then
	step image-debian build_debian
fi
step smoke smoke
printf 'proot-up: %-16s %6d ms\n' total $(($(now_ms) - T0))
echo "proot-up: ready; images in $IMAGES: $(ls "$IMAGES" | tr '\n' ' ')"
