#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: etcd + kube-apiserver with RBAC, several users
# with groups, and a kubeconfig per user. No controller-manager, scheduler or kubelet: Pods never
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
# Users and their groups (what RBAC and the Gatehouse policies see) come from tests/users.tsv:
# the certificate user gets a client certificate (CN=user, O=each group), every token user a
# token in the apiserver's token file; each gets DIR/kubeconfigs/<kubeconfig>.kubeconfig.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../tools.env
source "$here/../tools.env"
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

# Start a daemon in its own session so `down` can kill it and anything it spawned.
start_daemon() {
  local name="$1" dir="$2"; shift 2
  setsid "$@" >"$dir/$name.log" 2>&1 < /dev/null &
  echo $! >"$dir/$name.pid"
}

stop_daemon() {
  local name="$1" dir="$2" pid
  [[ -f "$dir/$name.pid" ]] || return 0
  pid="$(cat "$dir/$name.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) ignored SIGTERM; killing"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$dir/$name.pid"
}

gen_certs() {
  local pki="$1" admin subject
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
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3 \
      -extfile server.ext -out apiserver.crt 2>/dev/null
    openssl req "${ec[@]}" -keyout admin.key -out admin.csr \
      -subj "$subject" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3 \
      -extfile client.ext -out admin.crt 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext
  )
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

up() {
  local dir="$1"
  [[ -x "$K8S_BIN/kube-apiserver" ]] || die "no kube-apiserver in $K8S_BIN: run tests/scripts/build-tools.sh"
  [[ -n "$ETCD" && -x "$ETCD" ]] || die "no etcd on PATH: apt-get install etcd-server (or set ETCD)"
  if [[ -f "$dir/apiserver.pid" ]] && kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null; then
    die "a control plane is already running in $dir (control-plane.sh down $dir)"
  fi
  rm -rf "$dir"; mkdir -p "$dir/kubeconfigs"
  dir="$(cd "$dir" && pwd)"
  local etcd_port peer_port api_port
  etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"

  gen_certs "$dir/pki"
  : >"$dir/tokens.csv"; chmod 600 "$dir/tokens.csv"
  local user kubeconfig groups token
  while IFS=$'\t' read -r user kubeconfig groups; do
    token="$(openssl rand -hex 24)"
    echo "$token,$user,uid-$user,\"$groups\"" >>"$dir/tokens.csv"
    write_kubeconfig "$dir/kubeconfigs/$kubeconfig.kubeconfig" "https://127.0.0.1:$api_port" \
      "$dir/pki/ca.crt" "$kubeconfig" "    token: $token"
  done < <(users_with token)
  kubeconfig="$(users_with certificate | head -1 | cut -f2)"
  write_kubeconfig "$dir/kubeconfigs/$kubeconfig.kubeconfig" "https://127.0.0.1:$api_port" \
    "$dir/pki/ca.crt" "$kubeconfig" "    client-certificate: $dir/pki/admin.crt
    client-key: $dir/pki/admin.key"

  log "starting etcd on 127.0.0.1:$etcd_port"
  start_daemon etcd "$dir" "$ETCD" --name gatehouse-test --data-dir "$dir/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "gatehouse-test=http://127.0.0.1:$peer_port"
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q true && break
    kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null || { tail -20 "$dir/etcd.log" >&2; die "etcd exited"; }
    sleep 0.1
  done

  log "starting kube-apiserver $KUBERNETES_VERSION on https://127.0.0.1:$api_port"
  start_daemon apiserver "$dir" "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$dir/pki" \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" --token-auth-file="$dir/tokens.csv" \
    --authorization-mode=RBAC \
    --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
    --disable-admission-plugins=ServiceAccount \
    --service-account-issuer="https://127.0.0.1:$api_port" \
    --service-account-key-file="$dir/pki/sa.pub" --service-account-signing-key-file="$dir/pki/sa.key" \
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

  cat >"$dir/env" <<EOF
export GATEHOUSE_CP_DIR=$dir
export GATEHOUSE_KUBE_SERVER=https://127.0.0.1:$api_port
export GATEHOUSE_KUBECTL=$K8S_BIN/kubectl
export GATEHOUSE_HELM=$TOOLS_DIR/helm-$HELM_VERSION/helm
export GATEHOUSE_MINIO=$TOOLS_DIR/minio-$MINIO_VERSION/minio
export GATEHOUSE_KUBERNETES_VERSION=$KUBERNETES_VERSION
EOF
  log "ready: https://127.0.0.1:$api_port  (kubeconfigs in $dir/kubeconfigs; source $dir/env)"
}

down() {
  local dir="$1"
  [[ -d "$dir" ]] || return 0
  # Daemons the tests started against this plane (the shared operator) go first.
  local pidfile name
  for pidfile in "$dir"/*.pid; do
    [[ -e "$pidfile" ]] || continue
    name="$(basename "$pidfile" .pid)"
    [[ "$name" == apiserver || "$name" == etcd ]] || stop_daemon "$name" "$dir"
  done
  stop_daemon apiserver "$dir"
  stop_daemon etcd "$dir"
  # Nothing started for this plane may outlive it.
  local leftovers
  leftovers="$(pgrep -f -- "$dir/" || true)"
  if [[ -n "$leftovers" ]]; then
    log "error: processes still running for $dir: $(echo $leftovers)"; ps -o pid,args -p ${leftovers//$'\n'/,} >&2 || true
    kill -KILL $leftovers 2>/dev/null || true
    return 1
  fi
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
