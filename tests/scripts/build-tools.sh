#!/usr/bin/env bash
# Build (once) the real Kubernetes, Helm and MinIO binaries the tests run, from the Go module proxy, and
# cache them by version outside the git tree. Prints the cache directory on success.
#
#   tests/scripts/build-tools.sh            # build whatever is missing
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

build_kubernetes() {
  local v="$KUBERNETES_VERSION" dest="$TOOLS_DIR/kubernetes-$KUBERNETES_VERSION"
  if [[ -x "$dest/kube-apiserver" && -x "$dest/kubectl" ]]; then
    log "kubernetes $v: cached in $dest"; return
  fi
  log "kubernetes $v: building kube-apiserver and kubectl (several minutes on 2 cores)"
  local work; work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  (
    cd "$work"
    go mod init gatehouse.invalid/k8sbins >/dev/null 2>&1
    local gomod minor patch
    gomod="$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    [[ -f "$gomod" ]] || { log "cannot download k8s.io/kubernetes@$v"; exit 1; }
    minor="$(echo "$v" | cut -d. -f2)"; patch="$(echo "$v" | cut -d. -f3)"
    {
      echo "require k8s.io/kubernetes $v"
      echo "replace ("
      # every staging module of this release, as listed by its own go.mod
      awk '/=> \.\/staging\/src\// {print "  " $1 " => " $1 " v0.'"$minor.$patch"'"}' "$gomod"
      echo ")"
    } >>go.mod
    go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$v" "k8s.io/kubernetes/cmd/kubectl@$v"
    local ldflags="-s -w" key val
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      for kv in "gitVersion=$v" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" \
                "buildDate=1970-01-01T00:00:00Z"; do
        key="${kv%%=*}"; val="${kv#*=}"
        ldflags+=" -X $pkg.$key=$val"
      done
    done
    mkdir -p "$dest.partial"
    go build -trimpath -ldflags "$ldflags" -o "$dest.partial/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
    go build -trimpath -ldflags "$ldflags" -o "$dest.partial/kubectl" k8s.io/kubernetes/cmd/kubectl
  )
  rm -rf "$dest"; mv "$dest.partial" "$dest"
  log "kubernetes $v: built into $dest"
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
  *) echo "usage: $0 [all|kubernetes|helm|minio]" >&2; exit 2 ;;
esac
echo "$TOOLS_DIR"
