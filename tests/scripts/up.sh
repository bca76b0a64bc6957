#!/usr/bin/env bash
# `make up`: a local Gatehouse with no Docker and no cloud account, started by the Rust harness
# the end-to-end tests use (tests/src/make_up.rs, run by the gatehouse-up binary): the control
# plane, the chart, the operator and the proxy as the chart's ServiceAccounts, the demo target
# sshd, recordings in a directory or S3 (GATEHOUSE_RECORDINGS=local|minio|s3), kubeconfigs and
# alice's ssh_config. `make down` stops all of it; running `make up` again while it runs only
# prints the summary.
#
#   up.sh DIR     GATEHOUSE_UP_BIN names a prebuilt gatehouse-up (the quickstart test's);
#                 otherwise it is built here.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${1:?usage: up.sh DIR}"
up_bin="${GATEHOUSE_UP_BIN:-}"
if [[ -z "$up_bin" ]]; then
  [[ -x "$repo/target/debug/gatehouse-up" ]] \
    || echo "[up] building gatehouse-up, the operator and the proxy (cargo; the first build takes a few minutes)"
  (cd "$repo" && cargo build -q -p gatehouse-tests --bin gatehouse-up) \
    || { echo "make up: building gatehouse-up failed" >&2; exit 1; }
  up_bin="$repo/target/debug/gatehouse-up"
fi
exec "$up_bin" "$dir"
