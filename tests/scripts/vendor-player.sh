#!/usr/bin/env bash
# Vendor asciinema-player (the web player behind the audit API's `sessions/{id}/player` page) into
# audit-api/assets/: the npm package's all-in-one minified bundle, its stylesheet and its LICENSE.
# The build never fetches anything: the assets are committed and include_bytes!'d by
# audit-api/src/player.rs. Run this only to re-vendor; it fetches the package with `npm pack`
# (from whatever registry npm is configured with) and refuses a tarball whose SHA-256 is not the
# pinned one, so a changed upstream or a substituted package cannot slip in.
#
#   tests/scripts/vendor-player.sh            fetch, check, copy into audit-api/assets/
#   tests/scripts/vendor-player.sh --check    fetch, check, and fail if the committed assets differ
#
# To move to a new version: set VERSION, run once with SHA256= (it prints the tarball's digest),
# review the diff of the package, pin the digest here.
set -euo pipefail
VERSION=3.18.0
SHA256=18d9703510fae9209da9e26ce3d13c59f083b4abcff003a3bba958e03918a862

root="$(cd "$(dirname "$0")/../.." && pwd)"
assets="$root/audit-api/assets"
mode="${1:-copy}"
case "$mode" in copy | --check) ;; *) echo "usage: $0 [--check]" >&2; exit 2 ;; esac
command -v npm >/dev/null || { echo "vendor-player: npm not found" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "asciinema-player@$VERSION" >/dev/null)
tarball="$work/asciinema-player-$VERSION.tgz"
[[ -f "$tarball" ]] || { echo "vendor-player: npm pack produced no $tarball" >&2; exit 1; }
got="$(sha256sum "$tarball" | cut -d' ' -f1)"
if [[ "$got" != "$SHA256" ]]; then
  echo "vendor-player: asciinema-player-$VERSION.tgz has sha256 $got, pinned $SHA256: refusing" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work"
declare -A files=(
  [package/dist/bundle/asciinema-player.min.js]=asciinema-player.min.js
  [package/dist/bundle/asciinema-player.css]=asciinema-player.css
  [package/LICENSE]=LICENSE
)
status=0
for src in "${!files[@]}"; do
  dst="$assets/${files[$src]}"
  if [[ "$mode" == --check ]]; then
    cmp -s "$work/$src" "$dst" || { echo "vendor-player: $dst differs from asciinema-player $VERSION" >&2; status=1; }
  else
    mkdir -p "$assets"
    install -m 0644 "$work/$src" "$dst"
  fi
done
if [[ "$mode" == copy ]]; then
  printf 'asciinema-player %s (npm tarball sha256 %s), Apache-2.0: see LICENSE.\nVendored by tests/scripts/vendor-player.sh; do not edit these files by hand.\n' \
    "$VERSION" "$SHA256" >"$assets/VERSION"
  echo "vendor-player: asciinema-player $VERSION -> $assets"
fi
exit "$status"
