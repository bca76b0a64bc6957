#!/usr/bin/env bash
# Install the system packages the harness needs (Debian/Ubuntu), only those missing.
# Go and Rust are expected on the machine already (Go >= 1.26 builds the pinned Kubernetes).
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
)
missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("${wanted[$cmd]}")
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
