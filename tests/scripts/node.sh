#!/usr/bin/env bash
# One real Kubernetes node on this machine, joined to a control plane started with
# `GATEHOUSE_NODE=1 tests/scripts/control-plane.sh up DIR`: kube-controller-manager,
# kube-scheduler, containerd (Debian), kubelet, kube-proxy (iptables mode) and CNI (Debian's
# bridge + host-local). Everything lives under DIR/node; the addresses are in tests/node.env.
#
#   node.sh up   DIR    start the node; writes DIR/node/env and DIR/node/values.yaml (chart
#                       values for the locally built images)
#   node.sh down DIR    stop it and remove everything it made (idempotent; control-plane.sh down
#                       runs it first); fails, naming them, if processes, mounts, network
#                       namespaces, devices, cgroups, iptables rules or sysctls are left changed
#   node.sh status DIR
#   node.sh run  DIR -- CMD...   up, run CMD with DIR/node/env exported (GATEHOUSE_NODE_NAME,
#                       GATEHOUSE_NODE_IP, GATEHOUSE_NODE_VALUES, GATEHOUSE_CRICTL, ...), down;
#                       exits with CMD's status, or 1 if down found something left behind
#                       (`make e2e-node`: inside `control-plane.sh run`)
#
# Needs root, `tests/scripts/install-deps.sh node`, `tests/scripts/build-tools.sh node`, and the
# images from `tests/scripts/images.sh` (GATEHOUSE_IMAGES_DIR, default target/gatehouse/images).
#
# Network: pods get addresses from GATEHOUSE_POD_CIDR on the bridge GATEHOUSE_NODE_BRIDGE, inside
# network namespaces containerd's CNI plugins create. Their only routes are the pod range, the
# Service range and the node address; IP forwarding stays off and there is no masquerading, so
# nothing a pod sends can leave this machine. kube-proxy turns Service addresses into pod
# addresses, for pods (the `kubernetes` Service: the API server on the node address) and for this
# machine (the API server calling the admission webhook through its Service). A Service whose
# endpoints are pods on this node is not reachable from a pod (that would need forwarding); pods
# reach each other at their own addresses.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../tools.env
source "$here/../tools.env"
# shellcheck source=../node.env
source "$here/../node.env"
TOOLS_DIR="${GATEHOUSE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/tools}"
K8S_BIN="$TOOLS_DIR/kubernetes-$KUBERNETES_VERSION"
NODE_BIN="$TOOLS_DIR/kubernetes-node-$KUBERNETES_VERSION"
CRICTL="$TOOLS_DIR/crictl-$CRICTL_VERSION/crictl"
IMAGES_DIR="${GATEHOUSE_IMAGES_DIR:-$repo/target/gatehouse/images}"
CNI_BIN="${GATEHOUSE_CNI_BIN:-/usr/lib/cni}"
# kubelet's cgroups (cgroupfs driver) live under this root in every hierarchy: all of it is ours.
CGROUP_ROOT=gatehouse-node
# Host settings kubelet and kube-proxy may change; `down` puts back what `up` found.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
  net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait)
# Host paths kubelet, containerd and the CNI plugins write to whatever their configuration says;
# `down` removes them if `up` found them absent (and they are empty again).
# (kubelet's device plugin socket is always /var/lib/kubelet/device-plugins/kubelet.sock.)
HOST_PATHS=(/var/log/containers /var/lib/cni /run/containerd /var/lib/kubelet)
KUBELET_SOCKET=/var/lib/kubelet/device-plugins/kubelet.sock

log() { printf '[node] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# shellcheck source=daemons.sh
source "$here/daemons.sh"
STOP_GRACE=150

alive() { [[ -f "$1/$2.pid" ]] && kill -0 "$(cat "$1/$2.pid")" 2>/dev/null; }


# Wait until CMD succeeds, while daemon NAME (in DIR) stays alive. Args: seconds name dir cmd...
wait_for() {
  local secs="$1" name="$2" dir="$3"; shift 3
  local i
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    alive "$dir" "$name" || { tail -30 "$dir/$name.log" >&2; die "$name exited (log: $dir/$name.log)"; }
    sleep 0.2
  done
  tail -30 "$dir/$name.log" >&2
  die "$name not ready after ${secs}s (log: $dir/$name.log)"
}

# A client (or serving) certificate from the control plane's CA. Args: pki name subject ext.
issue_cert() {
  local pki="$1" name="$2" subj="$3" ext="$4" cadir="$5"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/$name.key" \
    -out "$pki/$name.csr" -subj "$subj" 2>/dev/null
  printf '%b' "$ext" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$cadir/ca.crt" -CAkey "$cadir/ca.key" \
    -CAcreateserial -CAserial "$pki/ca.srl" -days 3 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

write_kubeconfig() {
  local file="$1" server="$2" ca="$3" cert="$4" key="$5"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gatehouse-test
  cluster: {server: $server, certificate-authority: $ca}
users:
- name: component
  user: {client-certificate: $cert, client-key: $key}
contexts:
- name: component
  context: {cluster: gatehouse-test, user: component}
current-context: component
EOF
  chmod 600 "$file"
}

# The host's packet filter rules, without counters, to compare before and after.
rules_snapshot() {
  local tool
  for tool in iptables-save ip6tables-save; do
    command -v "$tool" >/dev/null || continue
    echo "## $tool"; "$tool" 2>/dev/null | sed -e '/^#/d' -e 's/\[[0-9]*:[0-9]*\]//'
  done
  if command -v nft >/dev/null; then echo "## nft tables"; nft list tables 2>/dev/null; fi
}

# kubelet (KUBE-FIREWALL, canaries) and kube-proxy (Services) make KUBE-* chains; preflight made
# sure there were none before. Remove them and every rule jumping to them, table by table
# (iptables-restore of the table without them), then the tables the node brought into being.
remove_kube_rules() {
  local before="$1" tool family table
  for tool in iptables ip6tables; do
    command -v "$tool-save" >/dev/null || continue
    family=ip; [[ $tool == ip6tables ]] && family=ip6
    for table in filter nat mangle raw security; do
      "$tool-save" -t "$table" 2>/dev/null | grep -q 'KUBE-' || continue
      "$tool-save" -t "$table" 2>/dev/null | grep -vE '^:KUBE-|^-A KUBE-|-j KUBE-' | "$tool-restore" -T "$table" ||
        log "cannot remove the KUBE- rules of $tool table $table"
      # A table that did not exist before and holds no rule now goes too.
      if command -v nft >/dev/null && ! grep -qx "table $family $table" "$before" &&
         ! "$tool-save" -t "$table" 2>/dev/null | grep -q '^-A '; then
        nft delete table "$family" "$table" 2>/dev/null || true
      fi
    done
  done
}

cgroup_hierarchies() {
  local d
  for d in /sys/fs/cgroup/*/; do
    [[ -f "$d/cgroup.procs" ]] && echo "${d%/}"
  done
  [[ -f /sys/fs/cgroup/cgroup.procs ]] && echo /sys/fs/cgroup
  return 0
}

preflight() {
  local dir="$1" cmd
  [[ $(id -u) == 0 ]] || die "the node needs root (network devices, cgroups, containers)"
  if [[ ! -f "$dir/env" ]] || ! alive "$dir" apiserver; then
    die "no control plane runs in $dir: GATEHOUSE_NODE=1 tests/scripts/control-plane.sh up $dir"
  fi
  [[ -f "$dir/node-ip" && -f "$dir/pki/kubelet-client.crt" ]] ||
    die "the control plane in $dir was not started for a node: down it, then GATEHOUSE_NODE=1 tests/scripts/control-plane.sh up $dir"
  for cmd in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    [[ -x "$NODE_BIN/$cmd" ]] || die "no $cmd in $NODE_BIN: run tests/scripts/build-tools.sh node"
  done
  [[ -x "$CRICTL" ]] || die "no crictl at $CRICTL: run tests/scripts/build-tools.sh node"
  for cmd in containerd containerd-shim-runc-v2 ctr runc iptables ip openssl findmnt curl; do
    command -v "$cmd" >/dev/null || die "$cmd not found: run tests/scripts/install-deps.sh node"
  done
  for cmd in bridge host-local loopback; do
    [[ -x "$CNI_BIN/$cmd" ]] || die "no CNI plugin $CNI_BIN/$cmd: run tests/scripts/install-deps.sh node"
  done
  [[ -f "$IMAGES_DIR/images.env" ]] || die "no images in $IMAGES_DIR: run tests/scripts/images.sh"
  [[ ! -d "$dir/node" ]] || die "a node was already started in $dir: tests/scripts/node.sh down $dir first"
  if ip link show "$GATEHOUSE_NODE_BRIDGE" >/dev/null 2>&1; then
    die "the bridge $GATEHOUSE_NODE_BRIDGE exists already (another node, or one not taken down): node.sh down DIR, or set GATEHOUSE_NODE_BRIDGE"
  fi
  local h
  for h in $(cgroup_hierarchies); do
    [[ ! -d "$h/$CGROUP_ROOT" ]] || die "cgroup $h/$CGROUP_ROOT exists already (a node not taken down): node.sh down DIR"
  done
  [[ ! -e "$KUBELET_SOCKET" ]] ||
    die "$KUBELET_SOCKET exists: another kubelet runs on this machine (or a node was not taken down: node.sh down DIR)"
  if rules_snapshot | grep -q 'KUBE-'; then
    die "this machine's packet filter has KUBE- chains already (another node or kube-proxy?); node.sh removes its own at down, so it cannot share them"
  fi
  "$here/check-ranges.py" "$GATEHOUSE_POD_CIDR" "$GATEHOUSE_SERVICE_CIDR" ||
    die "the pod or Service range is a network of this machine: set GATEHOUSE_POD_CIDR/GATEHOUSE_POD_GATEWAY or GATEHOUSE_SERVICE_CIDR to free ranges"
  [[ "$(cat /proc/sys/net/ipv4/ip_forward)" == 0 ]] ||
    log "warning: IP forwarding is on in this machine (not by this harness); pods still have no route off the machine"
}

up() {
  local dir="$1"
  [[ -d "$dir" ]] || die "no control plane in $dir: GATEHOUSE_NODE=1 tests/scripts/control-plane.sh up $dir"
  dir="$(cd "$dir" && pwd)"
  preflight "$dir"
  local n="$dir/node" start=$SECONDS
  # A node that fails to come up is taken down again: nothing half-made stays behind.
  # shellcheck disable=SC2064 # expand $dir now
  trap "rc=\$?; if ((rc)); then log 'up failed: taking the node down (its logs move to $dir/node.down.*)'; down '$dir' || true; fi" EXIT
  mkdir -p "$n"/{pki,containerd,kubelet,cni/net.d,cni/ipam,kcm,scheduler}
  # What `down` restores and checks against.
  local s p
  for s in "${SYSCTLS[@]}"; do
    [[ -e "/proc/sys/${s//.//}" ]] && echo "$s=$(cat "/proc/sys/${s//.//}")"
  done >"$n/sysctl.saved"
  for p in "${HOST_PATHS[@]}"; do [[ -e "$p" ]] || echo "$p"; done >"$n/host-paths.created"
  rules_snapshot >"$n/rules.before"

  # shellcheck disable=SC1091
  source "$dir/env"
  # shellcheck disable=SC1091
  source "$IMAGES_DIR/images.env"
  local server="$GATEHOUSE_KUBE_SERVER" ca="$dir/pki/ca.crt" admin="$dir/kubeconfigs/admin.kubeconfig"
  local kubectl=("$K8S_BIN/kubectl" --kubeconfig "$admin")
  local sock="$n/containerd/containerd.sock"

  # --- identities: each component authenticates as itself, as on a kubeadm cluster ---------
  local client='extendedKeyUsage=clientAuth\n'
  issue_cert "$n/pki" kubelet "/O=system:nodes/CN=system:node:$GATEHOUSE_NODE_NAME" "$client" "$dir/pki"
  issue_cert "$n/pki" kubelet-serving "/CN=$GATEHOUSE_NODE_NAME" \
    "subjectAltName=IP:$GATEHOUSE_NODE_IP,DNS:$GATEHOUSE_NODE_NAME\nextendedKeyUsage=serverAuth\n" "$dir/pki"
  issue_cert "$n/pki" kube-controller-manager "/CN=system:kube-controller-manager" "$client" "$dir/pki"
  issue_cert "$n/pki" kube-scheduler "/CN=system:kube-scheduler" "$client" "$dir/pki"
  issue_cert "$n/pki" kube-proxy "/CN=system:kube-proxy" "$client" "$dir/pki"
  local c
  for c in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    write_kubeconfig "$n/$c.kubeconfig" "$server" "$ca" "$n/pki/$c.crt" "$n/pki/$c.key"
  done

  # --- network: a bridge holding the pods' gateway; the Service range routed to it ------------
  ip link add "$GATEHOUSE_NODE_BRIDGE" type bridge
  echo "$GATEHOUSE_NODE_BRIDGE" >"$n/bridge"
  ip addr add "$GATEHOUSE_POD_GATEWAY/${GATEHOUSE_POD_CIDR#*/}" dev "$GATEHOUSE_NODE_BRIDGE"
  ip link set "$GATEHOUSE_NODE_BRIDGE" up
  # This machine's own packets to Service addresses (the API server calling a webhook) are
  # rewritten by kube-proxy; before that they are routed here, never to the default route.
  ip route add "$GATEHOUSE_SERVICE_CIDR" dev "$GATEHOUSE_NODE_BRIDGE" src "$GATEHOUSE_POD_GATEWAY"
  cat >"$n/cni/net.d/10-gatehouse.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "gatehouse",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$GATEHOUSE_NODE_BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$n/cni/ipam",
        "ranges": [[{"subnet": "$GATEHOUSE_POD_CIDR", "gateway": "$GATEHOUSE_POD_GATEWAY"}]],
        "routes": [
          {"dst": "$GATEHOUSE_SERVICE_CIDR", "gw": "$GATEHOUSE_POD_GATEWAY"},
          {"dst": "$GATEHOUSE_NODE_IP/32", "gw": "$GATEHOUSE_POD_GATEWAY"}
        ]
      }
    }
  ]
}
EOF

  # --- containerd: its own root, state, socket; images only from the local archives -----------
  mkdir -p "$n/containerd/certs.d"
  # Without CAP_SYS_RESOURCE (some sandboxes drop it) runc cannot give a sandbox the negative
  # oom_score_adj kubelet asks for, and every pod fails to start ("can't get final child's PID
  # from pipe"); containerd can clamp it to its own score instead.
  local restrict_oom=false
  if (( ! ($(awk '/^CapEff:/ {print "0x" $2}' /proc/self/status) >> 24 & 1) )); then
    restrict_oom=true
    log "no CAP_SYS_RESOURCE here: pod OOM scores are clamped to containerd's own (restrict_oom_score_adj)"
  fi
  cat >"$n/containerd/config.toml" <<EOF
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$n/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$GATEHOUSE_PAUSE_IMAGE"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = $restrict_oom
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$n/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$n/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    # No registry configuration: images are imported, never pulled (see the admission policy).
    config_path = "$n/containerd/certs.d"
EOF
  log "starting containerd $(containerd --version | awk '{print $3}') (socket $sock)"
  start_daemon containerd "$n" containerd --config "$n/containerd/config.toml"
  wait_for 30 containerd "$n" ctr --address "$sock" version
  local archive
  # shellcheck disable=SC2086 # a list of paths
  for archive in $GATEHOUSE_IMAGE_ARCHIVES; do
    [[ -f "$archive" ]] || die "image archive $archive is missing: run tests/scripts/images.sh"
    ctr --address "$sock" -n k8s.io images import "$archive" >"$n/import.log" 2>&1 ||
      { cat "$n/import.log" >&2; die "importing $archive into containerd failed"; }
  done
  local image
  for image in "$GATEHOUSE_PAUSE_IMAGE" "$GATEHOUSE_OPERATOR_IMAGE" "$GATEHOUSE_PROXY_IMAGE"; do
    "$CRICTL" --runtime-endpoint "unix://$sock" inspecti "$image" >/dev/null 2>&1 ||
      die "containerd's CRI does not see $image after the import"
  done

  # --- controllers and scheduler ------------------------------------------------------------
  local kcm_port sched_port
  kcm_port="$(free_port)"; sched_port="$(free_port)"
  local kcm="$n/kube-controller-manager.kubeconfig" sched="$n/kube-scheduler.kubeconfig"
  log "starting kube-controller-manager and kube-scheduler $KUBERNETES_VERSION"
  start_daemon kube-controller-manager "$n" "$NODE_BIN/kube-controller-manager" \
    --kubeconfig="$kcm" --authentication-kubeconfig="$kcm" --authorization-kubeconfig="$kcm" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$n/kcm" \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$dir/pki/sa.key" --root-ca-file="$ca" \
    --cluster-name=gatehouse-test --profiling=false
  start_daemon kube-scheduler "$n" "$NODE_BIN/kube-scheduler" \
    --kubeconfig="$sched" --authentication-kubeconfig="$sched" --authorization-kubeconfig="$sched" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --cert-dir="$n/scheduler" \
    --leader-elect=false --profiling=false
  wait_for 60 kube-controller-manager "$n" curl -fks "https://127.0.0.1:$kcm_port/healthz"
  wait_for 60 kube-scheduler "$n" curl -fks "https://127.0.0.1:$sched_port/healthz"

  # Images are never pulled on this node: a pod that could pull is refused at admission, with
  # the reason, instead of containerd reaching for a registry.
  "${kubectl[@]}" apply -f - >/dev/null <<'EOF'
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: gatehouse-test-node-never-pull}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}
  validations:
    - expression: >-
        object.spec.containers.all(c, c.imagePullPolicy == 'Never') &&
        (!has(object.spec.initContainers) || object.spec.initContainers.all(c, c.imagePullPolicy == 'Never'))
      message: "the test node never pulls images (no registry is reachable): set imagePullPolicy: Never and use an image from tests/scripts/images.sh"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: gatehouse-test-node-never-pull}
spec:
  policyName: gatehouse-test-node-never-pull
  validationActions: [Deny]
EOF

  # --- kubelet ----------------------------------------------------------------------------------
  local h
  for h in $(cgroup_hierarchies); do
    mkdir "$h/$CGROUP_ROOT"
    # A new cpuset is empty; its tasks could not run anywhere.
    if [[ -f "$h/cpuset.cpus" ]]; then
      cat "$h/cpuset.cpus" >"$h/$CGROUP_ROOT/cpuset.cpus"; cat "$h/cpuset.mems" >"$h/$CGROUP_ROOT/cpuset.mems"
    fi
  done
  local kubelet_port kubelet_healthz
  kubelet_port="$(free_port)"; kubelet_healthz="$(free_port)"
  cat >"$n/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1; kubelet >= 1.35 refuses it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix://$sock
address: $GATEHOUSE_NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz
tlsCertFile: $n/pki/kubelet-serving.crt
tlsPrivateKeyFile: $n/pki/kubelet-serving.key
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $ca}
authorization: {mode: Webhook}
podLogsDir: $n/kubelet/pod-logs
volumePluginDir: $n/kubelet/volume-plugins
# No DNS server for pods (there is none in this cluster, and none beyond the machine).
resolvConf: ""
clusterDomain: cluster.local
failSwapOn: false
# Images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The defaults (nodefs.available < 10%, imagefs.available < 15%) evict every pod and taint the
# node as soon as this shared machine's disk is 90% full, which other builds do: the node's pods
# use a few MiB, so only a nearly full disk or memory counts.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1Gi
  nodefs.inodesFree: 1%
  imagefs.available: 1Gi
  imagefs.inodesFree: 1%
shutdownGracePeriod: 0s
EOF
  log "starting kubelet $KUBERNETES_VERSION as node $GATEHOUSE_NODE_NAME ($GATEHOUSE_NODE_IP)"
  start_daemon kubelet "$n" "$NODE_BIN/kubelet" --config="$n/kubelet/config.yaml" \
    --kubeconfig="$n/kubelet.kubeconfig" --root-dir="$n/kubelet/root" \
    --hostname-override="$GATEHOUSE_NODE_NAME" --node-ip="$GATEHOUSE_NODE_IP"
  wait_for 90 kubelet "$n" "${kubectl[@]}" get node "$GATEHOUSE_NODE_NAME"

  # --- kube-proxy -----------------------------------------------------------------------------
  local proxy_healthz proxy_metrics
  proxy_healthz="$(free_port)"; proxy_metrics="$(free_port)"
  cat >"$n/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $n/kube-proxy.kubeconfig}
hostnameOverride: $GATEHOUSE_NODE_NAME
mode: iptables
clusterCIDR: $GATEHOUSE_POD_CIDR
detectLocalMode: ClusterCIDR
healthzBindAddress: 127.0.0.1:$proxy_healthz
metricsBindAddress: 127.0.0.1:$proxy_metrics
# NodePorts only on the node address (not on 127.0.0.1: that would need route_localnet).
nodePortAddresses: ["$GATEHOUSE_NODE_IP/32"]
iptables: {localhostNodePorts: false}
# 0: leave this machine's conntrack settings as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  log "starting kube-proxy $KUBERNETES_VERSION (iptables)"
  start_daemon kube-proxy "$n" "$NODE_BIN/kube-proxy" --config="$n/kube-proxy.yaml"
  wait_for 60 kube-proxy "$n" curl -fs "http://127.0.0.1:$proxy_healthz/healthz"

  if ! "${kubectl[@]}" wait --for=condition=Ready "node/$GATEHOUSE_NODE_NAME" --timeout=120s >/dev/null; then
    "${kubectl[@]}" describe node "$GATEHOUSE_NODE_NAME" >&2 || true
    tail -30 "$n/kubelet.log" >&2
    die "node $GATEHOUSE_NODE_NAME did not become Ready (log: $n/kubelet.log)"
  fi

  local repo_op tag_op repo_px tag_px
  repo_op="${GATEHOUSE_OPERATOR_IMAGE%:*}"; tag_op="${GATEHOUSE_OPERATOR_IMAGE##*:}"
  repo_px="${GATEHOUSE_PROXY_IMAGE%:*}"; tag_px="${GATEHOUSE_PROXY_IMAGE##*:}"
  cat >"$n/values.yaml" <<EOF
# helm install gatehouse charts/gatehouse -n gatehouse-system --create-namespace -f THIS
operator:
  image: {repository: $repo_op, tag: $tag_op, pullPolicy: Never}
proxy:
  image: {repository: $repo_px, tag: $tag_px, pullPolicy: Never}
EOF
  cat >"$n/env" <<EOF
export GATEHOUSE_NODE_NAME=$GATEHOUSE_NODE_NAME
export GATEHOUSE_NODE_IP=$GATEHOUSE_NODE_IP
export GATEHOUSE_POD_CIDR=$GATEHOUSE_POD_CIDR
export GATEHOUSE_CONTAINERD_SOCK=$sock
export GATEHOUSE_CRICTL="$CRICTL --runtime-endpoint unix://$sock"
export GATEHOUSE_NODE_VALUES=$n/values.yaml
export GATEHOUSE_OPERATOR_IMAGE=$GATEHOUSE_OPERATOR_IMAGE
export GATEHOUSE_PROXY_IMAGE=$GATEHOUSE_PROXY_IMAGE
EOF
  trap - EXIT
  log "node $GATEHOUSE_NODE_NAME Ready in $((SECONDS - start))s (chart values: $n/values.yaml; source $n/env)"
}

# --- down: every step runs even if one before failed; the checks at the end decide -------------
down() {
  local dir="$1"
  [[ -d "$dir/node" ]] || return 0
  dir="$(cd "$dir" && pwd)"
  local n="$dir/node" sock="$dir/node/containerd/containerd.sock" problems=()
  # kubelet first, so nothing restarts the pods removed next.
  stop_daemon kubelet "$n"
  if [[ -f "$n/containerd/config.toml" ]]; then
    # containerd removes pods properly (CNI DEL releases addresses and network namespaces); if it
    # died, start it again over the same state for that.
    if ! alive "$n" containerd; then
      start_daemon containerd "$n" containerd --config "$n/containerd/config.toml"
      for _ in $(seq 1 100); do ctr --address "$sock" version >/dev/null 2>&1 && break; sleep 0.2; done
    fi
    if [[ -x "$CRICTL" ]] && ctr --address "$sock" version >/dev/null 2>&1; then
      "$CRICTL" --runtime-endpoint "unix://$sock" --timeout 60s rmp --all --force >"$n/rmp.log" 2>&1 ||
        { problems+=("removing pod sandboxes failed (log: $n/rmp.log)"); }
      # Containers made outside CRI (ctr run while debugging) in any namespace.
      local cns task
      for cns in $(ctr --address "$sock" namespaces ls -q 2>/dev/null); do
        for task in $(ctr --address "$sock" -n "$cns" tasks ls -q 2>/dev/null); do
          ctr --address "$sock" -n "$cns" tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
        done
        for task in $(ctr --address "$sock" -n "$cns" tasks ls -q 2>/dev/null); do
          ctr --address "$sock" -n "$cns" tasks rm -f "$task" >/dev/null 2>&1 || true
        done
        for task in $(ctr --address "$sock" -n "$cns" containers ls -q 2>/dev/null); do
          ctr --address "$sock" -n "$cns" containers rm "$task" >/dev/null 2>&1 || true
        done
      done
    fi
    stop_daemon containerd "$n"
  fi
  stop_daemon kube-proxy "$n"
  stop_daemon kube-scheduler "$n"
  stop_daemon kube-controller-manager "$n"
  if [[ -x "$NODE_BIN/kube-proxy" && -f "$n/kube-proxy.yaml" ]]; then
    "$NODE_BIN/kube-proxy" --cleanup >"$n/kube-proxy-cleanup.log" 2>&1 ||
      log "kube-proxy --cleanup reported errors (log: $n/kube-proxy-cleanup.log); checking the rules below"
  fi

  # Processes: any left in the node's cgroups are its containers; any naming DIR are its daemons.
  local h pids
  for h in $(cgroup_hierarchies); do
    [[ -d "$h/$CGROUP_ROOT" ]] || continue
    pids="$(find "$h/$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | tr '\n' ' ')"
    if [[ -n "${pids// /}" ]]; then
      problems+=("processes left in $h/$CGROUP_ROOT (killed): $pids")
      # shellcheck disable=SC2086 # one pid per word
      kill -KILL $pids 2>/dev/null || true
      sleep 0.5
    fi
  done
  pids="$(pgrep -f -- "$n/" | tr '\n' ' ' || true)"
  if [[ -n "${pids// /}" ]]; then
    problems+=("processes left for $n (killed): $pids")
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
  fi

  # Mounts: kubelet's root dir (a bind mount of itself) and the pod volumes in it, which kubelet
  # unmounts only for pods it removes itself: expected. Anything else (a container's root file
  # system, a network namespace) means containerd did not clean up.
  local mounts m
  mounts="$(findmnt -rno TARGET | grep -F "$n/" | sort -r || true)"
  if [[ -n "$mounts" ]]; then
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || problems+=("cannot unmount $m"); done <<<"$mounts"
    mounts="$(grep -vxF "$n/kubelet/root" <<<"$mounts" | grep -vF "$n/kubelet/root/pods/" || true)"
    [[ -z "$mounts" ]] || problems+=("mounts left (unmounted): ${mounts//$'\n'/ }")
  fi
  # kubelet's device plugin socket (preflight made sure it was not there before).
  if [[ -S "$KUBELET_SOCKET" ]]; then rm -f "$KUBELET_SOCKET"; fi
  # kubelet's links to the containers' logs (always in /var/log/containers) that point here.
  if [[ -d /var/log/containers ]]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$n/*" -delete 2>/dev/null || true
  fi

  # Network: pod network namespaces (containerd's, under its state), the bridge and its route.
  local ns
  for ns in "$n"/containerd/state/netns/*; do
    [[ -e "$ns" ]] || continue
    problems+=("network namespace $ns left (removed)")
    umount "$ns" 2>/dev/null || true; rm -f "$ns"
  done
  if [[ -f "$n/bridge" ]]; then
    local br; br="$(cat "$n/bridge")"
    local ports; ports="$(ip -o link show master "$br" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | tr '\n' ' ')"
    if [[ -n "${ports// /}" ]]; then
      problems+=("pod interfaces left on $br (removed): $ports")
      for m in $ports; do ip link del "$m" 2>/dev/null || true; done
    fi
    ip link del "$br" 2>/dev/null || true
    rm -f "$n/bridge"
  fi

  # cgroups: depth first.
  for h in $(cgroup_hierarchies); do
    [[ -d "$h/$CGROUP_ROOT" ]] || continue
    find "$h/$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ ! -d "$h/$CGROUP_ROOT" ]] || problems+=("cannot remove cgroup $h/$CGROUP_ROOT")
  done

  # Host settings back as they were; host paths made for the node removed.
  local line key val
  if [[ -f "$n/sysctl.saved" ]]; then
    while IFS= read -r line; do
      key="${line%%=*}"; val="${line#*=}"
      [[ "$(cat "/proc/sys/${key//.//}")" == "$val" ]] && continue
      printf '%s' "$val" >"/proc/sys/${key//.//}" 2>/dev/null || problems+=("cannot restore $key=$val")
    done <"$n/sysctl.saved"
    rm -f "$n/sysctl.saved"
  fi
  if [[ -f "$n/host-paths.created" ]]; then
    while IFS= read -r m; do
      [[ -e "$m" ]] || continue
      find "$m" -depth -type d -empty -delete 2>/dev/null || true
      [[ ! -e "$m" ]] || problems+=("$m was created for the node and is not empty: $(find "$m" -mindepth 1 | head -5 | tr '\n' ' ')")
    done <"$n/host-paths.created"
    rm -f "$n/host-paths.created"
  fi
  if [[ -f "$n/rules.before" ]]; then
    remove_kube_rules "$n/rules.before"
    if ! diff <(cat "$n/rules.before") <(rules_snapshot) >"$n/rules.diff"; then
      problems+=("packet filter rules differ from before the node (diff: $n/rules.diff)")
    else
      rm -f "$n/rules.before" "$n/rules.diff"
    fi
  fi

  # The node's directory stays (logs), renamed, so `up` may run again.
  local kept
  kept="$dir/node.down.$(date +%s)"
  mv "$n" "$kept"
  if ((${#problems[@]})); then
    local p
    for p in "${problems[@]}"; do log "error: $p"; done
    log "the node's logs are in $kept"
    return 1
  fi
  log "node taken down; nothing left behind (logs in $kept)"
}

status() {
  local n="$1/node" name rc=1
  for name in containerd kube-controller-manager kube-scheduler kubelet kube-proxy; do
    if alive "$n" "$name"; then echo "$name: running (pid $(cat "$n/$name.pid"))"; rc=0; else echo "$name: stopped"; fi
  done
  return $rc
}

run() {
  local dir="$1" rc=0; shift
  [[ "${1:-}" == "--" ]] && shift
  [[ $# -gt 0 ]] || die "usage: $0 run DIR -- CMD..."
  up "$dir"
  # shellcheck disable=SC1091
  source "$dir/node/env"
  "$@" || rc=$?
  down "$dir" || { ((rc)) || rc=1; }
  return "$rc"
}

cmd="${1:-}"; shift || true
usage="usage: $0 up|down|status DIR | run DIR -- CMD..."
[[ $# -ge 1 ]] || { echo "$usage" >&2; exit 2; }
case "$cmd" in
  up) up "$1" ;;
  down) down "$1" ;;
  status) status "$1" ;;
  run) run "$@" ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
