#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: etcd + kube-apiserver with RBAC and the
# aggregation layer (front-proxy CA, requestheader authentication; without a node, endpoint
# routing: APIServices are reached at their EndpointSlice's address), several users with groups, and a kubeconfig per
# user. No controller-manager, scheduler or kubelet: Pods never
# run, namespaces never finish terminating, garbage collection does not happen.
#
#   control-plane.sh up   [DIR]        start; writes DIR/env and DIR/kubeconfigs/<user>.kubeconfig
#   control-plane.sh down [DIR]        stop everything started in DIR (idempotent)
#   control-plane.sh run  [DIR] -- CMD start, run CMD with GATEHOUSE_CP_DIR=DIR, always stop
#   control-plane.sh status [DIR]
#
# DIR defaults to target/gatehouse/control-plane (git-ignored). Binaries come from
# build-tools.sh's cache; etcd from PATH (Debian's etcd-server) unless $ETCD is set.
#
# GATEHOUSE_NODE=1 (as root) starts a plane a real node can join (tests/scripts/node.sh up DIR):
# the API server listens on the node address from tests/node.env (put on the loopback device,
# removed by `down`) instead of 127.0.0.1, so pods reach it through the `kubernetes` Service;
# Node authorization with NodeRestriction, the ServiceAccount admission plugin (pods get tokens)
# and a client certificate for the kubelets. `down` also takes the node down.
#
# Users and their groups (what RBAC and the Gatehouse policies see) come from tests/users.tsv:
# the certificate user gets a client certificate (CN=user, O=each group), every token user a
# token in the apiserver's token file; each gets DIR/kubeconfigs/<kubeconfig>.kubeconfig.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../tools.env
source "$here/../tools.env"
# shellcheck source=../node.env
source "$here/../node.env"
NODE_MODE="${GATEHOUSE_NODE:-}"
TOOLS_DIR="${GATEHOUSE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/tools}"
K8S_BIN="$TOOLS_DIR/kubernetes-$KUBERNETES_VERSION"
ETCD="${ETCD:-$(command -v etcd || true)}"
USERS_TSV="$here/../users.tsv"

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The rows of users.tsv with credential $1: "user<TAB>kubeconfig<TAB>groups" (groups may be empty).
users_with() {
  awk -F'\t' -v credential="$1" '!/^#/ && NF && $3 == credential {print $1 "\t" $2 "\t" $4}' "$USERS_TSV"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_daemon/stop_daemon: each daemon in its own session, so `down` stops what it spawned.
# shellcheck source=daemons.sh
source "$here/daemons.sh"

gen_certs() {
  local pki="$1" sans="IP:127.0.0.1,DNS:localhost" admin subject
  # A node's pods reach the API server at the `kubernetes` Service address, by that name.
  [[ -z "$NODE_MODE" ]] || sans+=",IP:$GATEHOUSE_NODE_IP,IP:$GATEHOUSE_API_SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  admin="$(users_with certificate | head -1)"
  [[ -n "$admin" ]] || die "$USERS_TSV has no certificate user"
  # CN=user, then one O= per group.
  subject="$(awk -F'\t' '{n = split($3, g, ","); s = ""; for (i = 1; i <= n; i++) s = s "/O=" g[i]; print s "/CN=" $1}' <<<"$admin")"
  mkdir -p "$pki"
  (
    cd "$pki"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 3 \
      -subj "/CN=gatehouse-test-ca" 2>/dev/null
    openssl req "${ec[@]}" -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$sans" >server.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3 \
      -extfile server.ext -out apiserver.crt 2>/dev/null
    openssl req "${ec[@]}" -keyout admin.key -out admin.csr \
      -subj "$subject" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3 \
      -extfile client.ext -out admin.crt 2>/dev/null
    if [[ -n "$NODE_MODE" ]]; then
      # The API server's identity towards kubelets (logs, exec, port-forward).
      openssl req "${ec[@]}" -keyout kubelet-client.key -out kubelet-client.csr \
        -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
      openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3 \
        -extfile client.ext -out kubelet-client.crt 2>/dev/null
    fi
    # The API server authenticates itself to admission webhooks with a certificate from a CA of
    # its own (AdmissionConfiguration below); webhooks trust only that CA, so nobody else who
    # reaches their port is answered.
    openssl req -x509 "${ec[@]}" -keyout webhook-client-ca.key -out webhook-client-ca.crt -days 3 \
      -subj "/CN=gatehouse-test-webhook-client-ca" 2>/dev/null
    openssl req "${ec[@]}" -keyout webhook-client.key -out webhook-client.csr \
      -subj "/CN=kube-apiserver-webhook-client" 2>/dev/null
    openssl x509 -req -in webhook-client.csr -CA webhook-client-ca.crt -CAkey webhook-client-ca.key \
      -CAcreateserial -days 3 -extfile client.ext -out webhook-client.crt 2>/dev/null
    # The aggregation layer: the API server proxies to aggregated API servers (APIServices) as
    # front-proxy-client, a certificate from a CA of its own that it publishes in ConfigMap
    # kube-system/extension-apiserver-authentication; those servers trust the X-Remote-* headers
    # only from a client with that certificate.
    openssl req -x509 "${ec[@]}" -keyout front-proxy-ca.key -out front-proxy-ca.crt -days 3 \
      -subj "/CN=gatehouse-test-front-proxy-ca" 2>/dev/null
    openssl req "${ec[@]}" -keyout front-proxy-client.key -out front-proxy-client.csr \
      -subj "/CN=front-proxy-client" 2>/dev/null
    openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
      -CAcreateserial -days 3 -extfile client.ext -out front-proxy-client.crt 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext
  )
}

# The AdmissionConfiguration that makes the API server present its webhook client certificate
# to every admission webhook (user '*': any webhook host).
write_admission_config() {
  local dir="$1"
  cat >"$dir/webhook-client.kubeconfig" <<EOF
apiVersion: v1
kind: Config
users:
- name: '*'
  user:
    client-certificate: $dir/pki/webhook-client.crt
    client-key: $dir/pki/webhook-client.key
EOF
  chmod 600 "$dir/webhook-client.kubeconfig"
  cat >"$dir/admission-config.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $dir/webhook-client.kubeconfig
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $dir/webhook-client.kubeconfig
EOF
}

write_kubeconfig() {
  local file="$1" server="$2" ca="$3" user="$4" auth="$5"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gatehouse-test
  cluster:
    server: $server
    certificate-authority: $ca
users:
- name: $user
  user:
$auth
contexts:
- name: $user@gatehouse-test
  context:
    cluster: gatehouse-test
    user: $user
    namespace: default
current-context: $user@gatehouse-test
EOF
  chmod 600 "$file"
}

# What a plane for a real node needs before anything starts.
node_preflight() {
  [[ $(id -u) == 0 ]] || die "GATEHOUSE_NODE=1 needs root (the node address, and later network devices, cgroups, containers)"
  command -v ip >/dev/null || die "ip not found: apt-get install iproute2"
  if ip -4 -o addr show | awk '{print $4}' | grep -qx "$GATEHOUSE_NODE_IP/32"; then
    die "the node address $GATEHOUSE_NODE_IP is already on this machine: another node-mode plane runs (control-plane.sh down DIR), or choose another GATEHOUSE_NODE_IP"
  fi
  "$here/check-ranges.py" "$GATEHOUSE_NODE_IP/32" "$GATEHOUSE_SERVICE_CIDR" ||
    die "the node address or Service range is a network of this machine: set GATEHOUSE_NODE_IP / GATEHOUSE_SERVICE_CIDR to free ranges"
}

up() {
  local dir="$1"
  [[ -x "$K8S_BIN/kube-apiserver" ]] || die "no kube-apiserver in $K8S_BIN: run tests/scripts/build-tools.sh"
  [[ -n "$ETCD" && -x "$ETCD" ]] || die "no etcd on PATH: apt-get install etcd-server (or set ETCD)"
  if [[ -f "$dir/apiserver.pid" ]] && kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null; then
    die "a control plane is already running in $dir (control-plane.sh down $dir)"
  fi
  if [[ -d "$dir" ]]; then
    local abs mounts
    abs="$(cd "$dir" && pwd)"
    # A node that was not taken down leaves mounts (volumes, rootfs) here: never delete through them.
    mounts="$(findmnt -rno TARGET | grep -F "$abs/" || true)"
    [[ -z "$mounts" ]] || die "mounts of an earlier node are left under $abs (tests/scripts/node.sh down $abs): ${mounts//$'\n'/ }"
  fi
  [[ -z "$NODE_MODE" ]] || node_preflight
  rm -rf "$dir"; mkdir -p "$dir/kubeconfigs"
  dir="$(cd "$dir" && pwd)"
  local etcd_port peer_port api_port host=127.0.0.1 node_flags=()
  etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"
  if [[ -n "$NODE_MODE" ]]; then
    host="$GATEHOUSE_NODE_IP"
    ip addr add "$GATEHOUSE_NODE_IP/32" dev lo || die "cannot put the node address $GATEHOUSE_NODE_IP on lo"
    echo "$GATEHOUSE_NODE_IP" >"$dir/node-ip"
    # shellcheck disable=SC2054 # the commas are inside flag values
    node_flags=(
      --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
      --kubelet-client-certificate="$dir/pki/kubelet-client.crt" --kubelet-client-key="$dir/pki/kubelet-client.key"
      # Nodes are reached at their InternalIP: a node name is never looked up in DNS.
      --kubelet-preferred-address-types=InternalIP
    )
  else
    # No pods, so no ServiceAccount tokens to mount (and no controller-manager to make the
    # default ServiceAccounts the plugin would wait for).
    node_flags=(--authorization-mode=RBAC --disable-admission-plugins=ServiceAccount
      # No kube-proxy either: APIServices (the audit API) are reached at their EndpointSlice's
      # address. The flag also sends admission webhooks to endpoints, so a real node (which
      # has kube-proxy, and whose test checks webhook calls go through the Service) goes without.
      --enable-aggregator-routing=true)
  fi
  local server="https://$host:$api_port"

  gen_certs "$dir/pki"
  write_admission_config "$dir"
  : >"$dir/tokens.csv"; chmod 600 "$dir/tokens.csv"
  local user kubeconfig groups token
  while IFS=$'\t' read -r user kubeconfig groups; do
    token="$(openssl rand -hex 24)"
    echo "$token,$user,uid-$user,\"$groups\"" >>"$dir/tokens.csv"
    write_kubeconfig "$dir/kubeconfigs/$kubeconfig.kubeconfig" "$server" \
      "$dir/pki/ca.crt" "$kubeconfig" "    token: $token"
  done < <(users_with token)
  kubeconfig="$(users_with certificate | head -1 | cut -f2)"
  write_kubeconfig "$dir/kubeconfigs/$kubeconfig.kubeconfig" "$server" \
    "$dir/pki/ca.crt" "$kubeconfig" "    client-certificate: $dir/pki/admin.crt
    client-key: $dir/pki/admin.key"

  log "starting etcd on 127.0.0.1:$etcd_port"
  start_daemon etcd "$dir" "$ETCD" --name gatehouse-test --data-dir "$dir/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "gatehouse-test=http://127.0.0.1:$peer_port"
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q true && break
    kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null || { tail -20 "$dir/etcd.log" >&2; down "$dir"; die "etcd exited"; }
    sleep 0.1
  done

  log "starting kube-apiserver $KUBERNETES_VERSION on $server"
  start_daemon apiserver "$dir" "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address="$host" --advertise-address="$host" --secure-port="$api_port" \
    --cert-dir="$dir/pki" \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" --token-auth-file="$dir/tokens.csv" \
    --admission-control-config-file="$dir/admission-config.yaml" \
    "${node_flags[@]}" \
    --service-cluster-ip-range="$GATEHOUSE_SERVICE_CIDR" --allow-privileged=true \
    --service-account-issuer="$server" \
    --service-account-key-file="$dir/pki/sa.pub" --service-account-signing-key-file="$dir/pki/sa.key" \
    --requestheader-client-ca-file="$dir/pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$dir/pki/front-proxy-client.crt" \
    --proxy-client-key-file="$dir/pki/front-proxy-client.key" \
    --profiling=false
  local kubectl="$K8S_BIN/kubectl" ready=""
  for _ in $(seq 1 600); do
    if "$kubectl" --kubeconfig "$dir/kubeconfigs/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1; then
      ready=1; break
    fi
    kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null || { tail -30 "$dir/apiserver.log" >&2; down "$dir"; die "kube-apiserver exited"; }
    sleep 0.1
  done
  [[ -n "$ready" ]] || { tail -30 "$dir/apiserver.log" >&2; down "$dir"; die "kube-apiserver not ready after 60s"; }
  # The bootstrap RBAC policy is written asynchronously after /readyz on some releases.
  for _ in $(seq 1 100); do
    "$kubectl" --kubeconfig "$dir/kubeconfigs/admin.kubeconfig" get clusterrole admin >/dev/null 2>&1 && break
    sleep 0.1
  done
  # Aggregated API servers (the audit API) read the front-proxy CA and header names from here.
  local published=""
  for _ in $(seq 1 100); do
    if "$kubectl" --kubeconfig "$dir/kubeconfigs/admin.kubeconfig" -n kube-system get configmap \
      extension-apiserver-authentication -o jsonpath='{.data.requestheader-client-ca-file}' 2>/dev/null |
      grep -q 'BEGIN CERTIFICATE'; then
      published=1; break
    fi
    sleep 0.1
  done
  [[ -n "$published" ]] || { tail -30 "$dir/apiserver.log" >&2; down "$dir"; die "kube-apiserver did not publish kube-system/extension-apiserver-authentication"; }

  cat >"$dir/env" <<EOF
export GATEHOUSE_CP_DIR=$dir
export GATEHOUSE_KUBE_SERVER=$server
export GATEHOUSE_KUBECTL=$K8S_BIN/kubectl
export GATEHOUSE_HELM=$TOOLS_DIR/helm-$HELM_VERSION/helm
export GATEHOUSE_MINIO=$TOOLS_DIR/minio-$MINIO_VERSION/minio
export GATEHOUSE_KUBERNETES_VERSION=$KUBERNETES_VERSION
EOF
  [[ -z "$NODE_MODE" ]] || echo "export GATEHOUSE_NODE_IP=$GATEHOUSE_NODE_IP" >>"$dir/env"
  log "ready: $server  (kubeconfigs in $dir/kubeconfigs; source $dir/env)"
}

down() {
  local dir="$1" failed=""
  [[ -d "$dir" ]] || return 0
  dir="$(cd "$dir" && pwd)"
  # A real node goes first (its pods, containerd, kubelet, network), while the API server is up.
  if [[ -d "$dir/node" ]]; then "$here/node.sh" down "$dir" || failed=1; fi
  # Daemons the tests started against this plane (the shared operator) go first.
  local pidfile name
  for pidfile in "$dir"/*.pid; do
    [[ -e "$pidfile" ]] || continue
    name="$(basename "$pidfile" .pid)"
    [[ "$name" == apiserver || "$name" == etcd ]] || stop_daemon "$name" "$dir"
  done
  stop_daemon apiserver "$dir"
  stop_daemon etcd "$dir"
  if [[ -f "$dir/node-ip" ]]; then
    ip addr del "$(cat "$dir/node-ip")/32" dev lo 2>/dev/null || true
    rm -f "$dir/node-ip"
  fi
  # Nothing started for this plane may outlive it.
  local leftovers
  leftovers="$(pgrep -f -- "$dir/" || true)"
  if [[ -n "$leftovers" ]]; then
    log "error: processes still running for $dir: ${leftovers//$'\n'/ }"; ps -o pid,args -p "${leftovers//$'\n'/,}" >&2 || true
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $leftovers 2>/dev/null || true
    return 1
  fi
  [[ -z "$failed" ]] || { log "error: the node in $dir was not taken down cleanly (see above)"; return 1; }
  log "stopped control plane in $dir"
}

status() {
  local dir="$1" name pid alive=0
  for name in etcd apiserver; do
    if [[ -f "$dir/$name.pid" ]] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
      pid="$(cat "$dir/$name.pid")"; echo "$name: running (pid $pid)"; alive=1
    else
      echo "$name: stopped"
    fi
  done
  [[ $alive == 1 ]]
}

cmd="${1:-}"; shift || true
dir="$repo/target/gatehouse/control-plane"
if [[ $# -gt 0 && "$1" != "--" ]]; then dir="$1"; shift; fi
case "$cmd" in
  up) up "$dir" ;;
  down) down "$dir" ;;
  status) status "$dir" ;;
  run)
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -gt 0 ]] || die "usage: $0 run [DIR] -- CMD..."
    trap 'down "$dir"' EXIT
    trap 'exit 130' INT TERM
    up "$dir"
    # shellcheck disable=SC1091
    source "$dir/env"
    "$@"
    ;;
  *) echo "usage: $0 up|down|status [DIR] | run [DIR] -- CMD..." >&2; exit 2 ;;
esac
