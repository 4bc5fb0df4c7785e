#!/usr/bin/env bash
# k8s-down.sh: stop the cluster k8s-up.sh started, every process by the PID
# it recorded, and remove what it left on the host: its pods' containers,
# the node address on lo and the pod bridge, mounts under its state directory,
# and its data (etcd, kubelet, containerd). The logs stay in $K8S_STATE.
#
# Pods go first, through the apiserver, so that the kubelet tears each one
# down properly (containers, network namespace, IP address); whatever is
# still left in containerd afterwards is killed there.
set -uo pipefail

STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}
K=${STACYVM_K8S_STATE:-$STATE/k8s}
API=https://127.0.0.1:26443
SOCK=$K/containerd/containerd.sock
NODE_IP=10.241.241.1
BRIDGE=stacyvm-cni0

[ -d "$K" ] || exit 0

alive() {
	local pid
	pid=$(cat "$K/$1.pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# stop NAME: SIGTERM, then SIGKILL after 20 s.
stop() {
	local pid
	alive "$1" || { rm -f "$K/$1.pid"; return 0; }
	pid=$(cat "$K/$1.pid")
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 1 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	rm -f "$K/$1.pid"
}

api() { curl -sf --max-time 20 --cacert "$K/pki/ca.crt" --cert "$K/pki/admin.crt" --key "$K/pki/admin.key" "$@"; }

ctr_k8s() { ctr --address "$SOCK" -n k8s.io "$@"; }

if alive apiserver && alive kubelet; then
	for ns in $(api "$API/api/v1/namespaces" | grep -o '"name":"[^"]*"' | cut -d'"' -f4); do
		api -X DELETE "$API/api/v1/namespaces/$ns/pods?gracePeriodSeconds=0" >/dev/null
	done
	# The kubelet removes the containers of pods that no longer exist.
	if alive containerd; then
		for _ in $(seq 1 150); do
			[ -z "$(ctr_k8s tasks ls -q 2>/dev/null)" ] && break
			sleep 0.2
		done
	fi
fi
stop kubelet
if alive containerd; then
	for t in $(ctr_k8s tasks ls -q 2>/dev/null); do
		ctr_k8s tasks kill -s SIGKILL "$t" >/dev/null 2>&1
	done
	sleep 0.5
	for t in $(ctr_k8s tasks ls -q 2>/dev/null); do
		ctr_k8s tasks delete -f "$t" >/dev/null 2>&1
	done
	for c in $(ctr_k8s containers ls -q 2>/dev/null); do
		ctr_k8s containers delete "$c" >/dev/null 2>&1
	done
fi
stop containerd
# Shims of this containerd that outlived it (a task the runtime never
# reported ended): found by their -address, which names this state
# directory and nothing else's (runc's shim ends its arguments with it,
# gVisor's puts -id after it). Then gVisor sandboxes and gofers of this
# cluster, found by their runsc root.
for pid in $(pgrep -f -- "-address $SOCK( |\$)" 2>/dev/null) $(pgrep -f -- "--root[= ]$K/containerd/runsc( |\$)" 2>/dev/null); do
	kill -KILL "$pid" 2>/dev/null
done
stop apiserver
stop etcd

ip addr del "$NODE_IP/32" dev lo 2>/dev/null
ip link del "$BRIDGE" 2>/dev/null
# Mounts the kubelet and containerd made under the state directory
# (volumes, rootfs overlays, sandbox shm), deepest first.
grep -o " $K/[^ ]*" /proc/mounts | sort -r | while read -r m; do
	umount -l "$m" 2>/dev/null
done
rm -rf "$K/etcd" "$K/kubelet" "$K/containerd" "$K/cni" "$K/imported"
echo "k8s-down: stopped"
