#!/usr/bin/env bash
# `make up`: a local Gatehouse with no Docker and no cloud account.
#   - the test harness's control plane (etcd + kube-apiserver on loopback, demo users);
#   - the chart installed with helm (CRDs, RBAC, admission webhooks pointing at the local operator);
#   - the operator and the proxy as local processes, authenticated as the chart's ServiceAccounts;
#   - a demo target: Debian's sshd on loopback trusting only the upstream CA, in HostGroup
#     demo/prod-db (the examples/ manifests, with this machine's address, port, host key, login);
#   - recordings in a local directory, or in S3: GATEHOUSE_RECORDINGS=minio starts a local MinIO
#     (built once into the tool cache), GATEHOUSE_RECORDINGS=s3 uses the store named by
#     GATEHOUSE_S3_ENDPOINT, GATEHOUSE_S3_BUCKET (and optional _REGION, _PATH_STYLE, _PREFIX) with
#     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
#   - kubeconfigs per demo user and an ssh_config snippet for alice.
# `make down` stops all of it. Running `make up` again while it runs only prints the summary.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${1:?usage: up.sh DIR}"
summary="$dir/summary.txt"
fail() { echo "make up: $*" >&2; exit 1; }
alive() { [[ -f "$dir/$1.pid" ]] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }
recordings="${GATEHOUSE_RECORDINGS:-local}"
# Checked before anything starts.
case "$recordings" in
  local | minio) ;;
  s3)
    for var in GATEHOUSE_S3_ENDPOINT GATEHOUSE_S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
      [[ -n "${!var:-}" ]] || fail "RECORDINGS=s3 needs $var"
    done
    [[ "${GATEHOUSE_S3_PATH_STYLE:-true}" =~ ^(true|false)$ ]] \
      || fail "GATEHOUSE_S3_PATH_STYLE must be true or false (got '$GATEHOUSE_S3_PATH_STYLE')"
    ;;
  *) fail "RECORDINGS must be local, minio or s3 (got '$recordings')" ;;
esac
if alive apiserver && alive operator && alive proxy && alive demo-sshd && [[ -f "$summary" ]] \
  && { [[ ! -f "$dir/minio.pid" ]] || alive minio; }; then
  running="$(sed -n 's/^GATEHOUSE_RECORDINGS=//p' "$dir/recordings.env" 2>/dev/null || true)"
  [[ "${running:-local}" == "$recordings" ]] \
    || fail "Gatehouse runs with RECORDINGS=${running:-local}; run make down first to switch to $recordings"
  cat "$summary"; exit 0
fi
# A half-started or crashed earlier run: start clean (its recordings and keys stay).
"$here/control-plane.sh" down "$dir" >/dev/null 2>&1 || true

# Prebuilt binaries may be named (the quickstart test does, running inside `cargo test`).
operator_bin="${GATEHOUSE_OPERATOR_BIN:-$repo/target/debug/gatehouse-operator}"
proxy_bin="${GATEHOUSE_PROXY_BIN:-$repo/target/debug/gatehouse-proxy}"
if [[ -z "${GATEHOUSE_OPERATOR_BIN:-}" || -z "${GATEHOUSE_PROXY_BIN:-}" ]]; then
  echo "[up] building the operator and the proxy (cargo; the first build takes a few minutes)"
  (cd "$repo" && cargo build -q -p gatehouse-operator -p gatehouse-proxy) || fail "cargo build failed"
fi
"$here/control-plane.sh" up "$dir"
# shellcheck disable=SC1091
source "$dir/env"
admin="$dir/kubeconfigs/admin.kubeconfig"
kubectl() { "$GATEHOUSE_KUBECTL" --kubeconfig "$admin" "$@"; }
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
# Wait up to $1 tenths of a second for the command after it to succeed.
retry() {
  local tries="$1"; shift
  for _ in $(seq 1 "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
# Start a daemon in its own process group (so `down` stops its children too).
daemon() {
  local name="$1"; shift
  setsid "$@" >"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}
# A kubeconfig for a ServiceAccount of the chart, with a fresh token.
service_account_kubeconfig() {
  local sa="$1" token file="$dir/kubeconfigs/$1.kubeconfig"
  token="$(kubectl -n gatehouse-system create token "$sa" --duration=48h)"
  printf '%s\n' \
    "apiVersion: v1" "kind: Config" \
    "clusters: [{name: local, cluster: {server: \"$GATEHOUSE_KUBE_SERVER\", certificate-authority: \"$dir/pki/ca.crt\"}}]" \
    "users: [{name: $sa, user: {token: \"$token\"}}]" \
    "contexts: [{name: $sa, context: {cluster: local, user: $sa}}]" \
    "current-context: $sa" >"$file"
  chmod 600 "$file"
  echo "$file"
}

webhook_port="$(free_port)"
operator_metrics="$(free_port)"
proxy_port="$(free_port)"
proxy_metrics="$(free_port)"
sshd_port="$(free_port)"

echo "[up] helm install gatehouse (webhooks call the local operator on 127.0.0.1:$webhook_port)"
"$GATEHOUSE_HELM" --kubeconfig "$admin" upgrade --install gatehouse "$repo/charts/gatehouse" \
  -n gatehouse-system --create-namespace --set "admission.url=https://127.0.0.1:$webhook_port" >/dev/null
kubectl wait --for=condition=Established --timeout=30s \
  crd/hostgroups.gatehouse.dev crd/accesspolicies.gatehouse.dev crd/accessrequests.gatehouse.dev >/dev/null

echo "[up] starting the operator"
KUBECONFIG="$(service_account_kubeconfig gatehouse-operator)" daemon operator \
  "$operator_bin" --namespace gatehouse-system \
  --webhook-addr "127.0.0.1:$webhook_port" --metrics-addr "127.0.0.1:$operator_metrics" --log-format text
retry 600 curl -fsS "http://127.0.0.1:$operator_metrics/readyz" \
  || { tail -20 "$dir/operator.log" >&2; fail "the operator did not become ready (log: $dir/operator.log)"; }
published() { kubectl -n gatehouse-system get configmap gatehouse-ssh -o "jsonpath={.data.$1}"; }
has_ssh_keys() { [[ -n "$(published proxy_known_hosts 2>/dev/null)" && -n "$(published 'upstream_ca\.pub')" ]]; }
retry 300 has_ssh_keys || fail "the operator did not publish ConfigMap gatehouse-ssh (log: $dir/operator.log)"

# Where recordings go. What the demo needs to fetch them again is kept in recordings.env
# (mode 600: it may hold S3 credentials, like the kubeconfigs hold tokens).
store_env="$dir/recordings.env"
s3_env() {
  (umask 077; {
    printf 'GATEHOUSE_RECORDINGS=%q\n' "$recordings"
    printf 'GATEHOUSE_S3_ENDPOINT=%q\nGATEHOUSE_S3_BUCKET=%q\nGATEHOUSE_S3_REGION=%q\n' \
      "$GATEHOUSE_S3_ENDPOINT" "$GATEHOUSE_S3_BUCKET" "$GATEHOUSE_S3_REGION"
    printf 'GATEHOUSE_S3_PATH_STYLE=%q\nGATEHOUSE_S3_PREFIX=%q\n' "$GATEHOUSE_S3_PATH_STYLE" "$GATEHOUSE_S3_PREFIX"
    printf 'AWS_ACCESS_KEY_ID=%q\nAWS_SECRET_ACCESS_KEY=%q\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
  } >"$store_env")
}
case "$recordings" in
  local)
    # Object keys start with recordings/: the store root is $dir, recordings land in $dir/recordings.
    store_args=(--storage local --storage-dir "$dir")
    where="$dir/recordings"
    printf 'GATEHOUSE_RECORDINGS=local\n' >"$store_env"
    ;;
  minio)
    [[ -x "$GATEHOUSE_MINIO" ]] || "$here/build-tools.sh" minio || fail "building MinIO failed"
    # The root credentials are made once and kept with MinIO's data.
    if [[ ! -f "$dir/minio/credentials" ]]; then
      mkdir -p "$dir/minio"
      (umask 077; printf 'gatehouse-%s %s\n' "$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')" \
        "$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')" >"$dir/minio/credentials")
    fi
    read -r AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY <"$dir/minio/credentials"
    minio_port="$(free_port)"
    echo "[up] starting MinIO on 127.0.0.1:$minio_port (data in $dir/minio/data)"
    # In its environment, not its command line, where `ps` would show the secret.
    MINIO_ROOT_USER="$AWS_ACCESS_KEY_ID" MINIO_ROOT_PASSWORD="$AWS_SECRET_ACCESS_KEY" \
      MINIO_BROWSER=off MINIO_UPDATE=off daemon minio \
      "$GATEHOUSE_MINIO" server --quiet --address "127.0.0.1:$minio_port" \
      --console-address "127.0.0.1:$(free_port)" "$dir/minio/data"
    # /minio/health/cluster, not /live or /ready: only it waits until MinIO can create a bucket.
    retry 600 curl -fsS "http://127.0.0.1:$minio_port/minio/health/cluster" \
      || { tail -20 "$dir/minio.log" >&2; fail "MinIO did not become ready (log: $dir/minio.log)"; }
    GATEHOUSE_S3_ENDPOINT="http://127.0.0.1:$minio_port" GATEHOUSE_S3_BUCKET=gatehouse-recordings
    GATEHOUSE_S3_REGION=us-east-1 GATEHOUSE_S3_PATH_STYLE=true GATEHOUSE_S3_PREFIX=
    # 409 (the bucket exists, from an earlier run) is fine.
    code="$(curl -sS -o "$dir/minio/create-bucket.out" -w '%{http_code}' -X PUT \
      --aws-sigv4 "aws:amz:$GATEHOUSE_S3_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
      "$GATEHOUSE_S3_ENDPOINT/$GATEHOUSE_S3_BUCKET")"
    [[ "$code" == 200 || "$code" == 409 ]] \
      || fail "creating bucket $GATEHOUSE_S3_BUCKET in MinIO answered $code: $(cat "$dir/minio/create-bucket.out")"
    s3_env
    ;;
  s3)
    GATEHOUSE_S3_REGION="${GATEHOUSE_S3_REGION:-us-east-1}"
    GATEHOUSE_S3_PATH_STYLE="${GATEHOUSE_S3_PATH_STYLE:-true}"
    GATEHOUSE_S3_PREFIX="${GATEHOUSE_S3_PREFIX:-}"
    s3_env
    ;;
esac
if [[ "$recordings" != local ]]; then
  store_args=(--storage s3 --s3-endpoint "$GATEHOUSE_S3_ENDPOINT" --s3-bucket "$GATEHOUSE_S3_BUCKET"
    --s3-region "$GATEHOUSE_S3_REGION" --s3-prefix "$GATEHOUSE_S3_PREFIX")
  [[ "$GATEHOUSE_S3_PATH_STYLE" == true ]] && store_args+=(--s3-path-style)
  where="s3://$GATEHOUSE_S3_BUCKET/${GATEHOUSE_S3_PREFIX}recordings/ at $GATEHOUSE_S3_ENDPOINT"
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
fi

echo "[up] starting the proxy (recordings in $where)"
KUBECONFIG="$(service_account_kubeconfig gatehouse-proxy)" POD_NAME=gatehouse-proxy-local daemon proxy \
  "$proxy_bin" --namespace gatehouse-system \
  --listen "127.0.0.1:$proxy_port" --metrics-addr "127.0.0.1:$proxy_metrics" \
  --spool-dir "$dir/spool" "${store_args[@]}" --log-format text
retry 600 curl -fsS "http://127.0.0.1:$proxy_metrics/readyz" \
  || { tail -20 "$dir/proxy.log" >&2; fail "the proxy did not become ready (log: $dir/proxy.log)"; }

echo "[up] starting the demo target prod-db-01 (sshd on 127.0.0.1:$sshd_port, trusting only the upstream CA)"
demo="$dir/demo"
mkdir -p "$demo"
login="$(id -un)"
[[ -f "$demo/ssh_host_ed25519_key" ]] || ssh-keygen -q -t ed25519 -N '' -C prod-db-01 -f "$demo/ssh_host_ed25519_key"
published 'upstream_ca\.pub' >"$demo/upstream_ca.pub"
cat >"$demo/sshd_config" <<CONFIG
# The demo target: an unprivileged sshd on loopback that trusts only Gatehouse's upstream CA.
ListenAddress 127.0.0.1:$sshd_port
HostKey $demo/ssh_host_ed25519_key
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile none
TrustedUserCAKeys $demo/upstream_ca.pub
Subsystem sftp internal-sftp
PrintMotd no
UseDNS no
LogLevel VERBOSE
CONFIG
# As root, Debian's sshd needs its privilege-separation directory.
if [[ $(id -u) == 0 ]]; then mkdir -p /run/sshd && chmod 0755 /run/sshd; fi
/usr/sbin/sshd -t -f "$demo/sshd_config" || fail "sshd refuses $demo/sshd_config"
daemon demo-sshd /usr/sbin/sshd -D -e -f "$demo/sshd_config"
retry 100 bash -c "exec 3<>/dev/tcp/127.0.0.1/$sshd_port" \
  || { tail -20 "$dir/demo-sshd.log" >&2; fail "the demo sshd did not start (log: $dir/demo-sshd.log)"; }

# The examples, made true for this machine: its address, port, host key and login.
host_key="$(cat "$demo/ssh_host_ed25519_key.pub")"
sed -e "s|address: 10.20.0.11|address: 127.0.0.1|" -e "s|port: 22|port: $sshd_port|" \
    -e "s|- ssh-ed25519 .* root@prod-db-01|- $host_key|" \
    "$repo/examples/hostgroup.yaml" >"$demo/hostgroup.yaml"
sed -e "s|logins: \[ubuntu, postgres\]|logins: [$login]|" "$repo/examples/policy.yaml" >"$demo/policy.yaml"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n demo apply -f "$demo/hostgroup.yaml" -f "$demo/policy.yaml" -f "$repo/examples/rbac.yaml" >/dev/null

# alice's key, and ssh_config for reaching prod-db-01 through the proxy with her certificate.
mkdir -p "$dir/alice"
[[ -f "$dir/alice/id_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C alice@gatehouse-demo -f "$dir/alice/id_ed25519"
published proxy_known_hosts >"$dir/alice/known_hosts"
cat >"$dir/ssh_config" <<CONFIG
# Reach prod-db-01 through the local Gatehouse proxy as alice (ssh -F $dir/ssh_config prod-db-01).
Host prod-db-01
  HostName 127.0.0.1
  Port $proxy_port
  User $login@prod-db-01
  HostKeyAlias gatehouse-proxy
  UserKnownHostsFile $dir/alice/known_hosts
  StrictHostKeyChecking yes
  IdentityFile $dir/alice/id_ed25519
  CertificateFile $dir/alice/id_ed25519-cert.pub
  IdentitiesOnly yes
  BatchMode yes
CONFIG

cat >"$summary" <<EOF

Gatehouse is up.
  API server   $GATEHOUSE_KUBE_SERVER   (Kubernetes $GATEHOUSE_KUBERNETES_VERSION)
  kubectl      $GATEHOUSE_KUBECTL
  operator     webhook https://127.0.0.1:$webhook_port, metrics http://127.0.0.1:$operator_metrics/metrics, log $dir/operator.log
  proxy        ssh 127.0.0.1:$proxy_port, metrics http://127.0.0.1:$proxy_metrics/metrics, log $dir/proxy.log
  target       prod-db-01 = sshd on 127.0.0.1:$sshd_port (login $login), HostGroup demo/prod-db, log $dir/demo-sshd.log
  recordings   $where
  kubeconfigs  $dir/kubeconfigs/{admin,alice,bob,carol,dave,mallory}.kubeconfig
               alice: group dev (requester)   bob, carol: sre-leads (approvers)
  ssh_config   $dir/ssh_config (alice's key $dir/alice/id_ed25519)

Walk through it with: make demo     Stop everything with: make down
EOF
cat "$summary"
