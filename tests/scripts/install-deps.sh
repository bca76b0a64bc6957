#!/usr/bin/env bash
# Install the system packages the harness needs (Debian/Ubuntu), only those missing.
# Go and Rust are expected on the machine already (Go >= 1.26 builds the pinned Kubernetes).
#
#   install-deps.sh        what `make test` needs
#   install-deps.sh node   also what a real node needs (tests/scripts/node.sh, images.sh):
#                          containerd, runc, the CNI plugins, iptables/nftables, buildah, gcc
#                          with static glibc for the pause binary
set -euo pipefail
log() { printf '[install-deps] %s\n' "$*" >&2; }

# command -> Debian package (sshd lives in /usr/sbin, often not on a user's PATH)
declare -A wanted=(
  [etcd]=etcd-server
  [openssl]=openssl
  [curl]=curl
  [ssh-keygen]=openssh-client
  [sshd]=openssh-server
  [faketime]=faketime
  [python3]=python3
  [setsid]=util-linux
  [asciinema]=asciinema
  [chromium]=chromium
)
# file -> Debian package, for what is not a command on PATH
declare -A wanted_files=()
case "${1:-}" in
  "") ;;
  node)
    wanted+=(
      [containerd]=containerd
      [runc]=runc
      [iptables]=iptables
      [nft]=nftables
      [buildah]=buildah
      [gcc]=gcc
      [findmnt]=util-linux
      [ip]=iproute2
    )
    wanted_files+=(
      [/usr/lib/cni/bridge]=containernetworking-plugins
      ["/usr/lib/$(uname -m)-linux-gnu/libc.a"]=libc6-dev
    )
    ;;
  *) echo "usage: $0 [node]" >&2; exit 2 ;;
esac
missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("${wanted[$cmd]}")
done
for file in "${!wanted_files[@]}"; do
  [[ -e "$file" ]] || missing+=("${wanted_files[$file]}")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    log "missing packages: ${missing[*]} (run as root: apt-get install ${missing[*]})"; exit 1
  fi
  log "installing: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for tool in go cargo; do
  command -v "$tool" >/dev/null || { log "$tool not found: install Go >= 1.26 and Rust (rustup) first"; exit 1; }
done
go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
if ((go_minor < 26)); then log "Go $(go env GOVERSION) is too old: Kubernetes 1.36 needs Go >= 1.26"; exit 1; fi
