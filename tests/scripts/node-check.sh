#!/usr/bin/env bash
# The chart on a real node, checked: what an operator of a cluster sees after `helm install`.
#
#   node-check.sh DIR     DIR: a plane with a node (GATEHOUSE_NODE=1 control-plane.sh up DIR;
#                         node.sh up DIR). Installs the chart with the node's image values,
#                         checks, uninstalls; exits non-zero at the first check that fails.
#
# Checks, with real pods: both operator and both proxy replicas Running and Ready; every
# container runs as uid 65532 with no capabilities, no-new-privileges, a seccomp filter and a
# read-only root file system; exactly one operator holds the Lease; an AccessRequest created with
# kubectl is stamped by the mutating webhook (the API server calls it through the gatehouse-webhook
# Service), refused for self-approval, approved by annotation and Issued; `helm uninstall` removes
# the pods and keeps the CA Secrets.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${1:?usage: $0 DIR}"
dir="$(cd "$dir" && pwd)"
ns=gatehouse-system

log() { printf '[node-check] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
ok() { log "ok: $*"; }

[[ -f "$dir/env" && -f "$dir/node/env" ]] || die "no node in $dir: GATEHOUSE_NODE=1 control-plane.sh up $dir; node.sh up $dir"
# shellcheck disable=SC1091
source "$dir/env"
# shellcheck disable=SC1091
source "$dir/node/env"
kc="$dir/kubeconfigs"
k() { "$GATEHOUSE_KUBECTL" --kubeconfig "$kc/admin.kubeconfig" "$@"; }
as() { local user="$1"; shift; "$GATEHOUSE_KUBECTL" --kubeconfig "$kc/$user.kubeconfig" "$@"; }
helm() { "$GATEHOUSE_HELM" --kubeconfig "$kc/admin.kubeconfig" "$@"; }
read -r -a crictl <<<"$GATEHOUSE_CRICTL"

start=$SECONDS
helm install gatehouse "$repo/charts/gatehouse" -n "$ns" --create-namespace \
  -f "$GATEHOUSE_NODE_VALUES" --wait --timeout 3m >/dev/null ||
  { k -n "$ns" get pods -o wide >&2 || true; die "helm install --wait did not finish"; }
ok "helm install --wait: all replicas ready in $((SECONDS - start))s"

ready_pods() {
  k -n "$ns" get pods -l "app.kubernetes.io/component=$1" \
    -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeName} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    awk -v node="$GATEHOUSE_NODE_NAME" '$2 == "Running" && $3 == node && $4 == "True" {print $1}'
}
for component in operator proxy; do
  count="$(ready_pods "$component" | wc -l)"
  ((count == 2)) || { k -n "$ns" get pods -o wide >&2; die "$count $component pods Running and Ready on $GATEHOUSE_NODE_NAME, want 2"; }
  ok "2 $component pods Running and Ready on $GATEHOUSE_NODE_NAME"
done

# What the chart's securityContext became, read from the processes themselves.
checked=0
for id in $("${crictl[@]}" ps -q --label "io.kubernetes.pod.namespace=$ns" 2>/dev/null); do
  info="$("${crictl[@]}" inspect "$id" 2>/dev/null)"
  name="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["metadata"]["name"])' <<<"$info")"
  pid="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["pid"])' <<<"$info")"
  status="$(cat "/proc/$pid/status")"
  grep -qE '^Uid:\s+65532\s+65532\s+65532\s+65532$' <<<"$status" || die "$name (pid $pid) does not run as uid 65532: $(grep ^Uid <<<"$status")"
  grep -qE '^CapEff:\s+0+$' <<<"$status" || die "$name (pid $pid) has capabilities: $(grep ^CapEff <<<"$status")"
  grep -qE '^NoNewPrivs:\s+1$' <<<"$status" || die "$name (pid $pid) may gain privileges"
  grep -qE '^Seccomp:\s+2$' <<<"$status" || die "$name (pid $pid) has no seccomp filter"
  root_opts="$(awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo")"
  [[ ",$root_opts," == *,ro,* ]] || die "$name (pid $pid) has a writable root file system ($root_opts)"
  checked=$((checked + 1))
done
((checked == 4)) || die "checked $checked containers in $ns, want 4"
ok "4 containers: uid 65532, no capabilities, no-new-privileges, seccomp filter, read-only root"

holder="$(k -n "$ns" get lease gatehouse-operator -o jsonpath='{.spec.holderIdentity}')"
ready_pods operator | grep -qx "$holder" || die "the Lease holder '$holder' is not a ready operator pod"
ok "Lease gatehouse-operator held by $holder"

# Admission through the Service: the webhook configuration names the Service (no URL), and this
# API server does not route to endpoints itself, so it dials the Service address kube-proxy maps.
[[ -z "$(k get mutatingwebhookconfiguration gatehouse -o jsonpath='{.webhooks[0].clientConfig.url}')" ]] ||
  die "the webhook has a URL; this check needs the chart's Service reference"
svc_ip="$(k -n "$ns" get service gatehouse-webhook -o jsonpath='{.spec.clusterIP}')"
team="node-check-$RANDOM"
k create namespace "$team" >/dev/null
for f in hostgroup policy rbac; do k -n "$team" apply -f "$repo/examples/$f.yaml" >/dev/null; done
as alice -n "$team" apply -f "$repo/examples/request.yaml" >/dev/null || die "alice could not create an AccessRequest"
requester="$(k -n "$team" get accessrequest alice-prod-db-01 -o jsonpath='{.spec.requester.username}')"
[[ "$requester" == alice ]] || die "spec.requester is '$requester', want alice (the mutating webhook did not run)"
ok "AccessRequest stamped with requester alice by the webhook"
if out="$(as alice -n "$team" annotate accessrequest alice-prod-db-01 gatehouse.dev/approve=ok 2>&1)"; then
  die "alice approved her own request: $out"
fi
grep -q 'cannot approve' <<<"$out" || die "self-approval refused for another reason: $out"
ok "self-approval refused by admission: ${out#Error from server: }"
as bob -n "$team" annotate accessrequest alice-prod-db-01 gatehouse.dev/approve="node-check" >/dev/null ||
  die "bob could not approve"
phase=""
for _ in $(seq 1 60); do
  phase="$(k -n "$team" get accessrequest alice-prod-db-01 -o jsonpath='{.status.phase}')"
  [[ "$phase" == Issued ]] && break
  sleep 0.5
done
[[ "$phase" == Issued ]] || die "the approved request is '$phase', not Issued"
ok "approved by bob and Issued"
if [[ -r /proc/net/nf_conntrack ]]; then
  backends="$(awk -v svc="dst=$svc_ip" '$0 ~ svc" " && / dport=443 / {for (i = 1; i <= NF; i++) if ($i ~ /^src=/) s = $i; print s}' /proc/net/nf_conntrack |
    sed 's/^src=//' | sort -u | tr '\n' ' ')"
  [[ -n "${backends// /}" ]] || die "no connection to the webhook Service $svc_ip:443 in the connection tracking table"
  ok "the API server reached the webhook at Service $svc_ip:443, answered by operator pods ${backends% }"
else
  log "note: no /proc/net/nf_conntrack here, so the Service path is not shown (the webhook ran: see above)"
fi

ca_before="$(k -n "$ns" get secret gatehouse-user-ca gatehouse-upstream-ca -o jsonpath='{range .items[*]}{.metadata.uid}{end}')"
helm uninstall gatehouse -n "$ns" --wait --timeout 2m >/dev/null || die "helm uninstall failed"
for _ in $(seq 1 120); do
  [[ -z "$(k -n "$ns" get pods -o name)" ]] && break
  sleep 0.5
done
[[ -z "$(k -n "$ns" get pods -o name)" ]] || die "pods left after helm uninstall: $(k -n "$ns" get pods -o name | tr '\n' ' ')"
ca_after="$(k -n "$ns" get secret gatehouse-user-ca gatehouse-upstream-ca -o jsonpath='{range .items[*]}{.metadata.uid}{end}')"
[[ -n "$ca_before" && "$ca_before" == "$ca_after" ]] || die "the CA Secrets did not survive helm uninstall"
ok "helm uninstall: pods gone, CA Secrets kept"
k delete namespace "$team" --wait=false >/dev/null
log "all checks passed in $((SECONDS - start))s"
