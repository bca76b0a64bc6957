#!/usr/bin/env bash
# `make up`: a local Gatehouse — control plane on loopback, chart installed with helm.
# Grows with the project: the operator and proxy join as local processes when they land.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${1:?usage: up.sh DIR}"
"$here/control-plane.sh" up "$dir"
# shellcheck disable=SC1091
source "$dir/env"
admin="$dir/kubeconfigs/admin.kubeconfig"
"$GATEHOUSE_HELM" --kubeconfig "$admin" upgrade --install gatehouse "$repo/charts/gatehouse" \
  -n gatehouse-system --create-namespace >/dev/null
"$GATEHOUSE_KUBECTL" --kubeconfig "$admin" wait --for=condition=Established --timeout=30s \
  crd/hostgroups.gatehouse.dev crd/accesspolicies.gatehouse.dev crd/accessrequests.gatehouse.dev >/dev/null
cat <<EOF

Gatehouse is up.
  API server   $GATEHOUSE_KUBE_SERVER   (Kubernetes $GATEHOUSE_KUBERNETES_VERSION)
  kubectl      $GATEHOUSE_KUBECTL
  kubeconfigs  $dir/kubeconfigs/{admin,alice,bob,carol,dave,mallory}.kubeconfig
               alice: group dev (requester)   bob, carol: sre-leads (approvers)

Try it:
  export PATH=$(dirname "$GATEHOUSE_KUBECTL"):\$PATH KUBECONFIG=$admin
  kubectl create namespace demo
  kubectl -n demo apply -f examples/
  kubectl -n demo get gatehouse

Stop everything with: make down
EOF
