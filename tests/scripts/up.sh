#!/usr/bin/env bash
# `make up`: a local Gatehouse — control plane on loopback, chart installed with helm, and the
# operator running as a local process (authenticated as the chart's ServiceAccount) that serves
# the chart's admission webhook. The proxy joins when it lands.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${1:?usage: up.sh DIR}"
"$here/control-plane.sh" up "$dir"
# shellcheck disable=SC1091
source "$dir/env"
admin="$dir/kubeconfigs/admin.kubeconfig"
(cd "$repo" && cargo build -q -p gatehouse-operator)
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
webhook_port="$(free_port)"
metrics_port="$(free_port)"
# The API server reaches the operator on loopback: the chart's webhooks get its URL.
"$GATEHOUSE_HELM" --kubeconfig "$admin" upgrade --install gatehouse "$repo/charts/gatehouse" \
  -n gatehouse-system --create-namespace --set "admission.url=https://127.0.0.1:$webhook_port" >/dev/null
"$GATEHOUSE_KUBECTL" --kubeconfig "$admin" wait --for=condition=Established --timeout=30s \
  crd/hostgroups.gatehouse.dev crd/accesspolicies.gatehouse.dev crd/accessrequests.gatehouse.dev >/dev/null
token="$("$GATEHOUSE_KUBECTL" --kubeconfig "$admin" -n gatehouse-system create token gatehouse-operator --duration=48h)"
operator_kubeconfig="$dir/kubeconfigs/gatehouse-operator.kubeconfig"
printf '%s\n' \
  "apiVersion: v1" "kind: Config" \
  "clusters: [{name: local, cluster: {server: \"$GATEHOUSE_KUBE_SERVER\", certificate-authority: \"$dir/pki/ca.crt\"}}]" \
  "users: [{name: gatehouse-operator, user: {token: \"$token\"}}]" \
  "contexts: [{name: operator, context: {cluster: local, user: gatehouse-operator}}]" \
  "current-context: operator" >"$operator_kubeconfig"
chmod 600 "$operator_kubeconfig"
KUBECONFIG="$operator_kubeconfig" setsid "$repo/target/debug/gatehouse-operator" \
  --namespace gatehouse-system --webhook-addr "127.0.0.1:$webhook_port" \
  --metrics-addr "127.0.0.1:$metrics_port" >"$dir/operator.log" 2>&1 </dev/null &
# control-plane.sh down stops every DIR/*.pid daemon.
echo $! >"$dir/operator.pid"
ready=""
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$(cat "$dir/operator.pid")" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$ready" ]] || { tail -20 "$dir/operator.log" >&2; echo "the operator did not become ready" >&2; exit 1; }
cat <<EOF

Gatehouse is up.
  API server   $GATEHOUSE_KUBE_SERVER   (Kubernetes $GATEHOUSE_KUBERNETES_VERSION)
  kubectl      $GATEHOUSE_KUBECTL
  operator     webhook https://127.0.0.1:$webhook_port, metrics http://127.0.0.1:$metrics_port/metrics
               log $dir/operator.log
  kubeconfigs  $dir/kubeconfigs/{admin,alice,bob,carol,dave,mallory}.kubeconfig
               alice: group dev (requester)   bob, carol: sre-leads (approvers)

Try it:
  export PATH=$(dirname "$GATEHOUSE_KUBECTL"):\$PATH KUBECONFIG=$admin
  kubectl create namespace demo
  kubectl -n demo apply -f examples/hostgroup.yaml -f examples/policy.yaml -f examples/rbac.yaml
  kubectl --kubeconfig $dir/kubeconfigs/alice.kubeconfig -n demo apply -f examples/request.yaml
  kubectl --kubeconfig $dir/kubeconfigs/bob.kubeconfig -n demo annotate ar alice-prod-db-01 gatehouse.dev/approve=ok
  kubectl -n demo get gatehouse

Stop everything with: make down
EOF
