#!/usr/bin/env bash
# k8s-up.sh: a real single-node Kubernetes cluster on this machine, for the
# Kubernetes provider's tests: etcd (Debian's etcd-server), kube-apiserver
# and kubelet (built from source by k8s-build.sh), and containerd (Debian's,
# with its CRI plugin) running pods with runc by default, and with gVisor
# under the RuntimeClass "gvisor" (handler runsc: gVisor's own
# containerd-shim-runsc-v1 and runsc, both built from source by
# runsc-build.sh). There is no scheduler or controller manager: the provider
# sets a pod's nodeName, which is all a single node needs.
#
# Everything listens on loopback: the kubelet on an address outside
# 127.0.0.0/8 (it refuses a loopback node IP) that is added to lo, where the
# apiserver reaches it; nothing leaves the machine. Pods get
# addresses on a private bridge with no route off the host.
#
# containerd is a second, private instance (own socket, root and state
# directories under $K8S_STATE/containerd): dockerd's containerd is not
# touched. No image can be pulled, so the pod sandbox ("pause") image is
# compiled here and imported, and so are the test images, from dockerd
# (`docker save | ctr import`, run docker-up.sh first).
#
# Idempotent: a second run with the cluster up returns at once. Stop it with
# k8s-down.sh (every process by its PID). What the tests need is written to
# $K8S_STATE/env (source it):
#
#   STACYVM_TEST_K8S_KUBECONFIG   admin kubeconfig (client certificate)
#   STACYVM_TEST_K8S_NODE         the node's name, for pods' nodeName
#   STACYVM_TEST_K8S_CONTAINERD   containerd's socket, for image imports
#   STACYVM_TEST_K8S_RUNTIMECLASS a RuntimeClass to test too (gvisor)
#
# Environment (all optional):
#   STACYVM_CI_STATE   parent of K8S_STATE                (/tmp/stacyvm-ci)
#   STACYVM_K8S_STATE  certificates, data, logs, pids     ($STACYVM_CI_STATE/k8s)
#   STACYVM_K8S_IMAGES images to import from dockerd      (stacyvm/busybox:test stacyvm/debian:test)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
STATE=${STACYVM_CI_STATE:-/tmp/stacyvm-ci}
K=${STACYVM_K8S_STATE:-$STATE/k8s}
IMAGES=${STACYVM_K8S_IMAGES:-stacyvm/busybox:test stacyvm/debian:test}
NODE=stacyvm-node
NODE_IP=10.241.241.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/24
ETCD_PORT=23790
ETCD_PEER_PORT=23800
API_PORT=26443
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
PAUSE_IMAGE=stacyvm.local/pause:3.10
NAMESPACE=stacyvm-test
SOCK=$K/containerd/containerd.sock
RUNSC=${STACYVM_RUNSC:-/usr/local/sbin/runsc}
# The RuntimeClass the tests use, and the containerd runtime handler it names.
RUNTIME_CLASS=gvisor
RUNTIME_HANDLER=runsc

mkdir -p "$STATE" "$K"

now_ms() { date +%s%3N; }
CURRENT=
step() {
	CURRENT=$1
	shift
	local t0
	t0=$(now_ms)
	"$@"
	printf 'k8s-up: %-22s %6d ms\n' "$CURRENT" $(($(now_ms) - t0))
	CURRENT=
}
trap 'rc=$?; if [ $rc -ne 0 ] && [ -n "$CURRENT" ]; then echo "k8s-up: step $CURRENT FAILED (exit $rc)" >&2; fi' EXIT

alive() {
	local pid
	pid=$(cat "$K/$1.pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# start NAME CMD...: a background process in its own session, logging to
# $K/NAME.log, its PID in $K/NAME.pid.
start() {
	local name=$1
	shift
	alive "$name" && return 0
	setsid "$@" >"$K/$name.log" 2>&1 </dev/null &
	echo $! >"$K/$name.pid"
}

# stop_process NAME: SIGTERM, then SIGKILL after 20 s.
stop_process() {
	local pid
	pid=$(cat "$K/$1.pid")
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	rm -f "$K/$1.pid"
}

# wait_for NAME SECONDS CHECK...: polls CHECK until it succeeds; fails with
# NAME's log tail if it does not in time or NAME dies.
wait_for() {
	local name=$1 secs=$2
	shift 2
	local deadline=$((SECONDS + secs))
	while [ $SECONDS -lt $deadline ]; do
		"$@" >/dev/null 2>&1 && return 0
		if ! alive "$name"; then
			echo "k8s-up: $name exited; last lines of $K/$name.log:" >&2
			tail -30 "$K/$name.log" >&2
			return 1
		fi
		sleep 0.2
	done
	echo "k8s-up: $name not ready after ${secs}s; last lines of $K/$name.log:" >&2
	tail -30 "$K/$name.log" >&2
	return 1
}

install_packages() {
	local want=(etcd-server containerd runc containernetworking-plugins openssl curl gcc libc6-dev iproute2) missing=()
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	# kubectl is for people debugging the cluster; the tests use client-go.
	# Debian's kubernetes-client conflicts with other kubectl packages, so
	# it is installed only when there is no kubectl at all.
	command -v kubectl >/dev/null || missing+=(kubernetes-client)
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "k8s-up: installing ${missing[*]}"
	# policy-rc.d-less machines would start etcd's own service: the
	# package's default (127.0.0.1:2379) is not ours, so keep it off.
	DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y --no-install-recommends "${missing[@]}" >"$K/apt.log" 2>&1 ||
		{ apt-get update >>"$K/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y --no-install-recommends "${missing[@]}" >>"$K/apt.log" 2>&1; } ||
		{ tail -20 "$K/apt.log" >&2; return 1; }
}

# runsc and containerd-shim-runsc-v1 (runsc-build.sh; scripts/test started
# the build in the background long before).
wait_gvisor() {
	"$HERE/runsc-build.sh" wait
	SHIM=$("$HERE/runsc-build.sh" shim)
}

wait_binaries() {
	"$HERE/k8s-build.sh" wait
	BIN=$("$HERE/k8s-build.sh" bindir)
}

# cert NAME CN O SAN: a key and a certificate signed by the cluster CA.
cert() {
	local name=$1 cn=$2 o=$3 san=$4 subj="/CN=$2"
	[ -n "$o" ] && subj="/O=$o/CN=$cn"
	openssl genrsa -out "$K/pki/$name.key" 2048 2>/dev/null
	openssl req -new -key "$K/pki/$name.key" -subj "$subj" -out "$K/pki/$name.csr" 2>/dev/null
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=serverAuth,clientAuth"
		[ -n "$san" ] && echo "subjectAltName=$san"
	} >"$K/pki/$name.ext"
	openssl x509 -req -in "$K/pki/$name.csr" -CA "$K/pki/ca.crt" -CAkey "$K/pki/ca.key" -CAcreateserial \
		-days 30 -sha256 -extfile "$K/pki/$name.ext" -out "$K/pki/$name.crt" 2>/dev/null
}

make_pki() {
	[ -s "$K/pki/admin.crt" ] && return 0
	mkdir -p "$K/pki"
	chmod 700 "$K/pki"
	openssl genrsa -out "$K/pki/ca.key" 2048 2>/dev/null
	openssl req -x509 -new -key "$K/pki/ca.key" -subj "/CN=stacyvm-test-ca" -days 30 -sha256 \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		-out "$K/pki/ca.crt" 2>/dev/null
	cert apiserver kube-apiserver "" "IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
	cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
	cert kubelet "$NODE" "" "IP:$NODE_IP,DNS:$NODE"
	cert kubelet-client "system:node:$NODE" system:nodes ""
	cert admin stacyvm-admin system:masters ""
	# The service account token signer (the provider's pods mount no
	# token, but the apiserver needs a signer to start).
	openssl genrsa -out "$K/pki/sa.key" 2048 2>/dev/null
	openssl rsa -in "$K/pki/sa.key" -pubout -out "$K/pki/sa.pub" 2>/dev/null
}

kubeconfig() {
	local name=$1 user=$2
	cat >"$K/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: stacyvm-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $K/pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $K/pki/$user.crt
    client-key: $K/pki/$user.key
contexts:
- name: stacyvm-test
  context: {cluster: stacyvm-test, user: $user}
current-context: stacyvm-test
EOF
	chmod 600 "$K/$name.kubeconfig"
}

make_kubeconfigs() {
	kubeconfig admin admin
	kubeconfig kubelet kubelet-client
}

# The node's address goes on lo: it is then local to this machine like
# 127.0.0.1, but not in the loopback range, which the kubelet refuses as a
# node IP. (The kernels here have no dummy interface driver.)
# grep reads all of ip's output: with pipefail, grep -q stopping early
# can fail the pipeline (SIGPIPE) although the address is there.
node_address() {
	ip addr show dev lo | grep "inet $NODE_IP/" >/dev/null || ip addr add "$NODE_IP/32" dev lo
}

start_etcd() {
	mkdir -p "$K/etcd"
	chmod 700 "$K/etcd"
	start etcd etcd --name stacyvm-test --data-dir "$K/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "stacyvm-test=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
		--quota-backend-bytes 1073741824 --log-level warn
	wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

api() { curl -sf --cacert "$K/pki/ca.crt" --cert "$K/pki/admin.crt" --key "$K/pki/admin.key" "$@"; }

start_apiserver() {
	start apiserver "$BIN/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address 127.0.0.1 --secure-port "$API_PORT" --advertise-address "$NODE_IP" \
		--endpoint-reconciler-type none \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--client-ca-file "$K/pki/ca.crt" \
		--tls-cert-file "$K/pki/apiserver.crt" --tls-private-key-file "$K/pki/apiserver.key" \
		--kubelet-client-certificate "$K/pki/apiserver-kubelet-client.crt" \
		--kubelet-client-key "$K/pki/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority "$K/pki/ca.crt" \
		--kubelet-preferred-address-types InternalIP \
		--service-account-issuer https://kubernetes.default.svc \
		--service-account-key-file "$K/pki/sa.pub" --service-account-signing-key-file "$K/pki/sa.key" \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--anonymous-auth=false --allow-privileged=false --profiling=false \
		--enable-priority-and-fairness=false --event-ttl 30m
	wait_for apiserver 180 api "https://127.0.0.1:$API_PORT/readyz"
}

write_containerd_config() {
	mkdir -p "$K/containerd" "$K/cni/net.d" "$K/cni/ipam"
	# The gVisor shim's own options: which runsc, and a state root of this
	# cluster's (not dockerd's).
	cat >"$K/containerd/runsc.toml" <<EOF
binary_name = "$RUNSC"
root = "$K/containerd/runsc"
EOF
	cat >"$K/containerd/config.toml.new" <<EOF
version = 2
root = "$K/containerd/root"
state = "$K/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$K/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # The machines here run root without CAP_SYS_RESOURCE, so the negative
  # oom_score_adj the kubelet asks for pod sandboxes (-998) cannot be set:
  # clamp it to containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
    # gVisor through its own shim (runsc behind containerd's runc shim never
    # reports an init container's exit). containerd 1.6's CRI plugin
    # ignores runtime_path: it finds containerd-shim-runsc-v1 on its PATH,
    # which start_containerd prefixes with the shim's directory in
    # runsc-build.sh's cache: $SHIM
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.$RUNTIME_HANDLER]
      runtime_type = "io.containerd.runsc.v1"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.$RUNTIME_HANDLER.options]
        TypeUrl = "io.containerd.runsc.v1.options"
        ConfigPath = "$K/containerd/runsc.toml"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$K/cni/net.d"
EOF
	# A bridge with no route off the host: pods reach each other and the
	# node, nothing else.
	cat >"$K/cni/net.d/10-stacyvm.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "stacyvm-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "stacyvm-cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "dataDir": "$K/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

start_containerd() {
	write_containerd_config
	# A running containerd with another configuration (started by an older
	# k8s-up.sh, or the shim's version changed) is restarted: its shims, and
	# so the pods, keep running, and the kubelet reconnects.
	if alive containerd && ! cmp -s "$K/containerd/config.toml.new" "$K/containerd/config.toml"; then
		echo "k8s-up: containerd's configuration changed: restarting it"
		stop_process containerd
	fi
	mv "$K/containerd/config.toml.new" "$K/containerd/config.toml"
	start containerd env PATH="$(dirname "$SHIM"):$PATH" containerd --config "$K/containerd/config.toml"
	wait_for containerd 30 ctr --address "$SOCK" version
}

ctr_k8s() { ctr --address "$SOCK" -n k8s.io "$@"; }

# The pod sandbox image: a static pause binary in an otherwise empty image.
import_pause() {
	ctr_k8s images ls -q | grep -x "$PAUSE_IMAGE" >/dev/null && return 0
	local d
	d=$(mktemp -d)
	mkdir -p "$d/root"
	gcc -static -Os -s -o "$d/root/pause" "$HERE/k8s/pause.c"
	tar -C "$d/root" -cf "$d/layer.tar" pause
	oci_archive "$d" "$PAUSE_IMAGE" '["/pause"]' >"$d/image.tar"
	ctr_k8s images import "$d/image.tar" >/dev/null
	rm -rf "$d"
}

# oci_archive DIR REF ENTRYPOINT: writes to stdout a docker-archive (what
# `docker save` makes) of one layer, DIR/layer.tar.
oci_archive() {
	local d=$1 ref=$2 entry=$3 diff config
	diff=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
	mkdir -p "$d/archive"
	cp "$d/layer.tar" "$d/archive/layer.tar"
	printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$entry" "$diff" >"$d/archive/config.json"
	config=$(sha256sum "$d/archive/config.json" | cut -d' ' -f1)
	mv "$d/archive/config.json" "$d/archive/$config.json"
	printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$config" "$ref" >"$d/archive/manifest.json"
	tar -C "$d/archive" -c .
}

import_test_images() {
	local img id stamp
	mkdir -p "$K/imported"
	for img in $IMAGES; do
		if ! docker image inspect "$img" >/dev/null 2>&1; then
			echo "k8s-up: image $img is not in dockerd (run docker-up.sh first)" >&2
			return 1
		fi
		# An image already imported with the same docker image ID is not
		# imported again.
		id=$(docker image inspect -f '{{.Id}}' "$img")
		stamp=$K/imported/$(echo "$img" | tr '/:' '__')
		[ "$(cat "$stamp" 2>/dev/null)" = "$id" ] && ctr_k8s images ls -q | grep -x "docker.io/$img" >/dev/null && continue
		docker save "$img" | ctr_k8s images import - >/dev/null
		echo "$id" >"$stamp"
	done
}

write_kubelet_config() {
	mkdir -p "$K/kubelet"
	cat >"$K/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $K/pki/kubelet.crt
tlsPrivateKeyFile: $K/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $K/pki/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failSwapOn: false
resolvConf: /etc/resolv.conf
podCIDR: $POD_CIDR
maxPods: 110
syncFrequency: 10s
fileCheckFrequency: 60s
nodeStatusUpdateFrequency: 10s
serializeImagePulls: false
# A test machine's disk is whatever it is: never evict the tests' pods, and
# never garbage-collect the imported images (nothing can pull them again).
evictionHard: {memory.available: "1Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
containerLogMaxSize: 4Mi
containerLogMaxFiles: 2
EOF
}

start_kubelet() {
	write_kubelet_config
	mkdir -p "$K/kubelet/root"
	start kubelet "$BIN/kubelet" --config "$K/kubelet/config.yaml" --kubeconfig "$K/kubelet.kubeconfig" \
		--root-dir "$K/kubelet/root" --hostname-override "$NODE" --node-ip "$NODE_IP" --v 1
	wait_for kubelet 90 node_ready
}

node_ready() {
	api "https://127.0.0.1:$API_PORT/api/v1/nodes/$NODE" |
		tr -d ' \n' | grep '"type":"Ready","status":"True"' >/dev/null
}

# Without a controller manager nothing lifts the taints a new node is
# admitted with (not-ready until the node controller sees it Ready); the
# provider's pods name their node, and no scheduler runs, but clear them so
# that the node looks like any ready node.
untaint_node() {
	api -X PATCH -H 'Content-Type: application/merge-patch+json' \
		-d '{"spec":{"taints":null}}' "https://127.0.0.1:$API_PORT/api/v1/nodes/$NODE" >/dev/null
}

# The namespace of the tests, with the "default" service account that pod
# admission requires (a controller manager would create it).
make_namespace() {
	local base="https://127.0.0.1:$API_PORT/api/v1"
	api "$base/namespaces/$NAMESPACE" >/dev/null ||
		api -X POST -H 'Content-Type: application/json' \
			-d "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$NAMESPACE\"}}" "$base/namespaces" >/dev/null
	api "$base/namespaces/$NAMESPACE/serviceaccounts/default" >/dev/null ||
		api -X POST -H 'Content-Type: application/json' \
			-d '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"},"automountServiceAccountToken":false}' \
			"$base/namespaces/$NAMESPACE/serviceaccounts" >/dev/null
}

# The RuntimeClass that runs pods under gVisor.
make_runtime_class() {
	local base="https://127.0.0.1:$API_PORT/apis/node.k8s.io/v1/runtimeclasses"
	api "$base/$RUNTIME_CLASS" >/dev/null ||
		api -X POST -H 'Content-Type: application/json' \
			-d "{\"apiVersion\":\"node.k8s.io/v1\",\"kind\":\"RuntimeClass\",\"metadata\":{\"name\":\"$RUNTIME_CLASS\"},\"handler\":\"$RUNTIME_HANDLER\"}" \
			"$base" >/dev/null
}

write_env() {
	cat >"$K/env" <<EOF
export STACYVM_TEST_K8S_KUBECONFIG=$K/admin.kubeconfig
export STACYVM_TEST_K8S_NODE=$NODE
export STACYVM_TEST_K8S_NAMESPACE=$NAMESPACE
export STACYVM_TEST_K8S_CONTAINERD=$SOCK
export STACYVM_TEST_K8S_RUNTIMECLASS=$RUNTIME_CLASS
EOF
}

T0=$(now_ms)
step apt-packages install_packages
step pki make_pki
step kubeconfigs make_kubeconfigs
step node-address node_address
step etcd start_etcd
step gvisor wait_gvisor
step containerd start_containerd
step pause-image import_pause
step test-images import_test_images
step k8s-binaries wait_binaries
step kube-apiserver start_apiserver
step kubelet start_kubelet
step untaint-node untaint_node
step namespace make_namespace
step runtime-class make_runtime_class
step env write_env
echo "k8s-up: cluster ready in $(($(now_ms) - T0)) ms (source $K/env)"
