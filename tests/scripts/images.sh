#!/usr/bin/env bash
# Build the operator, proxy and pause images on this machine, with no registry: the repository's
# Dockerfile builds the runtime images (its `operator` and `proxy` stages, unchanged) on a base
# assembled here from the host's glibc runtime files, from binaries built here with cargo.
#
#   tests/scripts/images.sh [OUT]      OUT defaults to target/gatehouse/images
#   GATEHOUSE_IMAGE_PROFILE=debug ...  images of the debug binaries `make test` builds anyway
#                                      (default release, as the Dockerfile's build stage)
#
# Writes OUT/<name>.tar (docker archives for `ctr images import`) and OUT/images.env, which names
# the images (GATEHOUSE_OPERATOR_IMAGE, GATEHOUSE_PROXY_IMAGE, GATEHOUSE_PAUSE_IMAGE) and their
# archives. Needs buildah (Debian), gcc with static glibc (libc6-dev), cargo and go.
#
#   localhost/gatehouse-base:TAG      glibc + libgcc_s from this host (the Debian release the
#                                     published distroless base is built from), CA certificates,
#                                     /etc/passwd with nonroot (65532); no shell, no package manager
#   localhost/gatehouse-operator:TAG  Dockerfile --target operator, BINARIES=prebuilt, RUNTIME_IMAGE=base
#   localhost/gatehouse-proxy:TAG     Dockerfile --target proxy, likewise
#   localhost/gatehouse/pause:VER     Kubernetes' own build/pause (pause.c and Dockerfile of the
#                                     pinned release, from the Go module cache), gcc -static
# TAG is derived from the binaries' content, so a rebuilt binary is a new image name.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../tools.env
source "$here/../tools.env"
out="${1:-$repo/target/gatehouse/images}"
profile="${GATEHOUSE_IMAGE_PROFILE:-release}"
case "$profile" in
  release) cargo_profile=(--release); profile_dir=release ;;
  debug) cargo_profile=(); profile_dir=debug ;;
  *) echo "[images] error: GATEHOUSE_IMAGE_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in buildah gcc cargo go dpkg-query; do
  command -v "$tool" >/dev/null || die "$tool not found: run tests/scripts/install-deps.sh node"
done
[[ "$(gcc -print-file-name=libc.a)" == /* ]] ||
  die "no static glibc (libc.a) for the pause binary: apt-get install libc6-dev"

mkdir -p "$out"; out="$(cd "$out" && pwd)"
# buildah keeps everything under OUT: its storage (vfs: plain directories, no mounts left behind),
# its run state and its temporary files. Fresh each run, so an image is exactly what this run built.
rm -rf "$out/storage" "$out/run" "$out/tmp" "$out/context" "$out/base-rootfs" "$out/pause-context"
mkdir -p "$out/tmp"
export TMPDIR="$out/tmp"
# The one thing buildah keeps outside its --root: a blob-info cache in /var/lib/containers/cache.
# Removed again if this run made it.
if [[ ! -e /var/lib/containers ]]; then trap 'rm -rf /var/lib/containers' EXIT; fi
bah() { buildah --root "$out/storage" --runroot "$out/run" --storage-driver vfs "$@"; }
start=$SECONDS

log "building gatehouse-operator and gatehouse-proxy (cargo build ${cargo_profile[*]} --locked)"
(cd "$repo" && cargo build "${cargo_profile[@]}" --locked -p gatehouse-operator -p gatehouse-proxy)
target_dir="$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bins=("$target_dir/$profile_dir/gatehouse-operator" "$target_dir/$profile_dir/gatehouse-proxy")
tag="dev-$(cat "${bins[@]}" | sha256sum | cut -c1-12)"

# --- the runtime base: what the published distroless "cc" base provides, from this host --------
rootfs="$out/base-rootfs"
mkdir -p "$rootfs"
# Every shared object of glibc and libgcc_s as the host's packages install them (iconv modules
# left out), copied to the packaged paths.
mapfile -t libs < <(dpkg-query -L libc6 libgcc-s1 |
  grep -E '^/(usr/)?lib(64|/x86_64-linux-gnu)?/[^/]*\.so[.0-9]*$' | sort -u)
((${#libs[@]})) || die "dpkg lists no libc6/libgcc-s1 libraries: is this a Debian/Ubuntu host?"
tar -C / -cf - --no-recursion "${libs[@]#/}" | tar -C "$rootfs" -xf -
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot" "$rootfs/root"
[[ -s /etc/ssl/certs/ca-certificates.crt ]] ||
  die "no /etc/ssl/certs/ca-certificates.crt on this host: apt-get install ca-certificates"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"; chmod 0700 "$rootfs/root" "$rootfs/home/nonroot"
chown 65532:65532 "$rootfs/home/nonroot"

# Fail closed: each binary must start in the base as the image will run it (its dynamic loader,
# its libraries, uid 65532), before any image is built from it.
for bin in "${bins[@]}"; do
  [[ -x "$bin" ]] || die "$bin was not built"
  cp "$bin" "$rootfs/tmp/gatehouse-check"
  if ! chroot --userspec=65532:65532 "$rootfs" /tmp/gatehouse-check --version >/dev/null 2>"$out/base-check.log"; then
    cat "$out/base-check.log" >&2
    die "$(basename "$bin") does not start in the assembled base (missing library?); see above"
  fi
  rm -f "$rootfs/tmp/gatehouse-check" "$out/base-check.log"
done

bah from --name gatehouse-base-build scratch >/dev/null
tar -C "$rootfs" --numeric-owner -cf "$out/base-rootfs.tar" .
bah add gatehouse-base-build "$out/base-rootfs.tar" / >/dev/null
bah config --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --user 65532:65532 --workingdir /home/nonroot \
  --label "org.opencontainers.image.description=Gatehouse test base: host glibc, CA certificates, nonroot" \
  gatehouse-base-build
base="localhost/gatehouse-base:$tag"
bah commit --quiet --rm gatehouse-base-build "$base" >/dev/null
rm -f "$out/base-rootfs.tar"
log "base $base: $(du -sh "$rootfs" | cut -f1) ($((SECONDS - start))s so far)"

# --- operator and proxy: the repository's Dockerfile, prebuilt binaries on the local base ------
mkdir -p "$out/context"
cp "${bins[@]}" "$out/context/"
operator="localhost/gatehouse-operator:$tag"
proxy="localhost/gatehouse-proxy:$tag"
for target in operator proxy; do
  image="localhost/gatehouse-$target:$tag"
  log "building $image (Dockerfile --target $target)"
  bah bud --pull-never --layers=false -f "$repo/Dockerfile" --target "$target" \
    --build-arg BINARIES=prebuilt --build-arg RUNTIME_IMAGE="$base" \
    -t "$image" "$out/context" >"$out/build-$target.log" 2>&1 ||
    { tail -20 "$out/build-$target.log" >&2; die "building $image failed (log: $out/build-$target.log)"; }
done

# --- pause: Kubernetes' build/pause of the pinned release ----------------------------------------
kdir="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
  python3 -c 'import json,sys; print(json.load(sys.stdin).get("Dir",""))')"
[[ -f "$kdir/build/pause/linux/pause.c" ]] ||
  die "no build/pause/linux/pause.c in k8s.io/kubernetes@$KUBERNETES_VERSION (go mod download failed?)"
pause_ver="$(sed -n 's/^TAG ?= *//p' "$kdir/build/pause/Makefile")"
[[ -n "$pause_ver" ]] || die "cannot read the pause version from $kdir/build/pause/Makefile"
arch="$(go env GOARCH)"
mkdir -p "$out/pause-context/bin"
# The release Makefile's flags (its REV is a git describe; here the Kubernetes release).
gcc -Os -Wall -Werror -static "-DVERSION=v$pause_ver-$KUBERNETES_VERSION" \
  -o "$out/pause-context/bin/pause-linux-$arch" "$kdir/build/pause/linux/pause.c"
strip "$out/pause-context/bin/pause-linux-$arch"
pause="localhost/gatehouse/pause:$pause_ver"
log "building $pause (Kubernetes' build/pause/Dockerfile)"
bah bud --pull-never --layers=false -f "$kdir/build/pause/Dockerfile" \
  --build-arg BASE=scratch --build-arg ARCH="$arch" -t "$pause" "$out/pause-context" \
  >"$out/build-pause.log" 2>&1 ||
  { tail -20 "$out/build-pause.log" >&2; die "building $pause failed (log: $out/build-pause.log)"; }

# --- archives for containerd ----------------------------------------------------------------------
for pair in "operator=$operator" "proxy=$proxy" "pause=$pause"; do
  name="${pair%%=*}"; image="${pair#*=}"
  rm -f "$out/$name.tar"
  bah push --quiet "$image" "docker-archive:$out/$name.tar:$image" >/dev/null
done
cat >"$out/images.env" <<EOF
GATEHOUSE_IMAGE_TAG=$tag
GATEHOUSE_OPERATOR_IMAGE=$operator
GATEHOUSE_PROXY_IMAGE=$proxy
GATEHOUSE_PAUSE_IMAGE=$pause
GATEHOUSE_IMAGE_ARCHIVES="$out/operator.tar $out/proxy.tar $out/pause.tar"
EOF
rm -rf "$out/tmp" "$out/run"
log "built $operator, $proxy, $pause in $((SECONDS - start))s (archives and images.env in $out)"
