#!/usr/bin/env bash
# Build (once) the real Kubernetes, Helm and MinIO binaries the tests run, from the Go module proxy, and
# cache them by version outside the git tree. Prints the cache directory on success.
#
#   tests/scripts/build-tools.sh            # build whatever is missing
#   tests/scripts/build-tools.sh node       # also what a real node runs (kubelet, ..., crictl)
#   GATEHOUSE_TOOLS_DIR=/somewhere ...      # choose the cache (default ~/.cache/gatehouse/tools)
#
# kube-apiserver/kubectl: `go install k8s.io/kubernetes/...@vX` cannot work because the module
# requires its staging modules at v0.0.0 via replace lines into ./staging, so we build from a
# scratch module that maps every staging module to its published v0.X.Y twin.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../tools.env
source "$here/../tools.env"
TOOLS_DIR="${GATEHOUSE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/tools}"
mkdir -p "$TOOLS_DIR"
export GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOTOOLCHAIN=local

log() { printf '[build-tools] %s\n' "$*" >&2; }

# A scratch module that can build commands of k8s.io/kubernetes at $KUBERNETES_VERSION: every
# staging module of the release (as listed by its own go.mod) replaced by its published twin.
# Args: the work directory, then the commands (k8s.io/kubernetes/cmd/<name>) to add as tools.
# Sets K8S_LDFLAGS (the version stamps the release Makefile injects).
k8s_scratch_module() {
  local work="$1" v="$KUBERNETES_VERSION"; shift
  local gomod minor patch cmd tools=()
  minor="$(echo "$v" | cut -d. -f2)"; patch="$(echo "$v" | cut -d. -f3)"
  (
    cd "$work"
    go mod init gatehouse.invalid/k8sbins >/dev/null 2>&1
    gomod="$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    [[ -f "$gomod" ]] || { log "cannot download k8s.io/kubernetes@$v"; exit 1; }
    {
      echo "require k8s.io/kubernetes $v"
      echo "replace ("
      awk '/=> \.\/staging\/src\// {print "  " $1 " => " $1 " v0.'"$minor.$patch"'"}' "$gomod"
      echo ")"
    } >>go.mod
    for cmd in "$@"; do tools+=("k8s.io/kubernetes/cmd/$cmd@$v"); done
    go get -tool "${tools[@]}"
  )
  K8S_LDFLAGS="-s -w"
  local pkg kv
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for kv in "gitVersion=$v" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" \
              "buildDate=1970-01-01T00:00:00Z"; do
      K8S_LDFLAGS+=" -X $pkg.${kv%%=*}=${kv#*=}"
    done
  done
}

# Build commands of k8s.io/kubernetes into $dest (atomically: a failed build leaves no cache).
build_k8s_commands() {
  local dest="$1"; shift
  local work cmd
  work="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: $work is local
  trap "rm -rf '$work'; trap - RETURN" RETURN
  k8s_scratch_module "$work" "$@"
  rm -rf "$dest.partial"; mkdir -p "$dest.partial"
  for cmd in "$@"; do
    (cd "$work" && go build -trimpath -ldflags "$K8S_LDFLAGS" -o "$dest.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
  rm -rf "$dest"; mv "$dest.partial" "$dest"
}

build_kubernetes() {
  local v="$KUBERNETES_VERSION" dest="$TOOLS_DIR/kubernetes-$KUBERNETES_VERSION"
  if [[ -x "$dest/kube-apiserver" && -x "$dest/kubectl" ]]; then
    log "kubernetes $v: cached in $dest"; return
  fi
  log "kubernetes $v: building kube-apiserver and kubectl (several minutes on 2 cores)"
  build_k8s_commands "$dest" kube-apiserver kubectl
  log "kubernetes $v: built into $dest"
}

# What a real node runs (tests/scripts/node.sh): only built when the node mode is used.
NODE_COMMANDS=(kubelet kube-controller-manager kube-scheduler kube-proxy)
build_kubernetes_node() {
  local v="$KUBERNETES_VERSION" dest="$TOOLS_DIR/kubernetes-node-$KUBERNETES_VERSION" cmd missing=""
  for cmd in "${NODE_COMMANDS[@]}"; do [[ -x "$dest/$cmd" ]] || missing=1; done
  if [[ -z "$missing" ]]; then log "kubernetes node $v: cached in $dest"; return; fi
  log "kubernetes node $v: building ${NODE_COMMANDS[*]} (several minutes on 2 cores)"
  build_k8s_commands "$dest" "${NODE_COMMANDS[@]}"
  log "kubernetes node $v: built into $dest"
}

# crictl talks CRI to containerd: node.sh uses it to stop and remove pod sandboxes (so the CNI
# plugins release addresses and network namespaces) when the node goes down.
build_crictl() {
  local v="$CRICTL_VERSION" dest="$TOOLS_DIR/crictl-$CRICTL_VERSION"
  if [[ -x "$dest/crictl" ]]; then log "crictl $v: cached in $dest"; return; fi
  log "crictl $v: building"
  rm -rf "$dest.partial"; mkdir -p "$dest.partial"
  GOBIN="$dest.partial" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$v" "sigs.k8s.io/cri-tools/cmd/crictl@$v"
  rm -rf "$dest"; mv "$dest.partial" "$dest"
  log "crictl $v: built into $dest"
}

build_helm() {
  local v="$HELM_VERSION" dest="$TOOLS_DIR/helm-$HELM_VERSION" major
  if [[ -x "$dest/helm" ]]; then log "helm $v: cached in $dest"; return; fi
  major="$(echo "$v" | cut -d. -f1)"
  log "helm $v: building"
  mkdir -p "$dest.partial"
  # Inject what helm's Makefile injects: without it `helm version` is wrong and the Kubernetes
  # version `helm template`/`helm lint` assume offline is 1.20, failing our kubeVersion.
  local gomod k8s_minor pkg="helm.sh/helm/$major"
  gomod="$(go mod download -json "helm.sh/helm/$major@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  k8s_minor="$(awk '$1 == "k8s.io/client-go" {print $2}' "$gomod" | cut -d. -f2)"
  [[ -n "$k8s_minor" ]] || { log "cannot read helm's client-go version"; exit 1; }
  GOBIN="$dest.partial" go install -trimpath \
    -ldflags "-s -w -X $pkg/internal/version.version=$v \
      -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=$k8s_minor \
      -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=$k8s_minor" \
    "helm.sh/helm/$major/cmd/helm@$v"
  rm -rf "$dest"; mv "$dest.partial" "$dest"
  log "helm $v: built into $dest"
}

build_minio() {
  local v="$MINIO_VERSION" dest="$TOOLS_DIR/minio-$MINIO_VERSION"
  if [[ -x "$dest/minio" ]]; then log "minio $v: cached in $dest"; return; fi
  log "minio $v: building (several minutes on 2 cores)"
  mkdir -p "$dest.partial"
  GOBIN="$dest.partial" go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$v"
  rm -rf "$dest"; mv "$dest.partial" "$dest"
  log "minio $v: built into $dest"
}

case "${1:-all}" in
  all) build_kubernetes; build_helm; build_minio ;;
  kubernetes) build_kubernetes ;;
  helm) build_helm ;;
  minio) build_minio ;;
  kubernetes-node) build_kubernetes_node ;;
  crictl) build_crictl ;;
  # Everything tests/scripts/node.sh needs on top of `all`.
  node) build_kubernetes; build_helm; build_kubernetes_node; build_crictl ;;
  *) echo "usage: $0 [all|kubernetes|helm|minio|kubernetes-node|crictl|node]" >&2; exit 2 ;;
esac
echo "$TOOLS_DIR"
