#!/usr/bin/env bash
# `make demo`: the story end to end on what `make up` started (it runs `up` first when needed):
# alice requests access, bob approves, the operator issues a certificate, alice runs a command
# on prod-db-01 through the proxy, the recording is stored, and asciinema replays it.
# Prints each step like a transcript and exits non-zero at the first step that fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${1:?usage: demo.sh DIR}"
# Its output shows: the first run builds for minutes, and the summary says where things are.
"$here/up.sh" "$dir" || { echo "demo: make up failed (above); make down && make demo starts clean" >&2; exit 1; }
# shellcheck disable=SC1091
source "$dir/env"
cd "$repo"

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }
say() { printf '  %s\n' "$*"; }
fail() { printf '\ndemo FAILED: %s\n' "$*" >&2; exit 1; }
kubectl_as() {
  local user="$1"; shift
  "$GATEHOUSE_KUBECTL" --kubeconfig "$dir/kubeconfigs/$user.kubeconfig" "$@"
}
field() { kubectl_as admin -n demo get accessrequest "$request" -o "jsonpath=$1"; }
# Wait up to $1 seconds until field $2 is non-empty; print it.
await_field() {
  local seconds="$1" path="$2" value=""
  for _ in $(seq 1 $((seconds * 10))); do
    value="$(field "$path" 2>/dev/null || true)"
    [[ -n "$value" ]] && { echo "$value"; return 0; }
    sleep 0.1
  done
  return 1
}
await_phase() {
  local want="$1" phase=""
  for _ in $(seq 1 150); do
    phase="$(field '{.status.phase}' 2>/dev/null || true)"
    [[ "$phase" == "$want" ]] && return 0
    sleep 0.1
  done
  fail "request $request is ${phase:-without a phase}, not $want: $(field '{.status.conditions}' 2>/dev/null)"
}

login="$(id -un)"
request="alice-prod-db-01"
demo="$dir/demo"
# Each run tells the whole story: an earlier run's request goes first.
kubectl_as admin -n demo delete accessrequest "$request" --ignore-not-found --wait=true >/dev/null
rm -f "$dir/alice/id_ed25519-cert.pub"
# shellcheck disable=SC1091
source "$dir/cli.env"
export PATH="$repo/target/debug:$PATH"
gatehouse_as() {
  local user="$1"; shift
  "$GATEHOUSE_KUBECTL" gatehouse --kubeconfig "$dir/kubeconfigs/$user.kubeconfig" -n demo "$@"
}

step "kubectl gatehouse request prod-db-01 --name $request --for 1h --reason \"INC-4711\"   # as alice, waits"
gatehouse_as alice request prod-db-01 --name "$request" --login "$login" --for 1h --reason "INC-4711" \
  --key "$dir/alice/id_ed25519.pub" >"$demo/request.out" 2>"$demo/request.err" &
asking=$!
await_phase Pending
say "AccessRequest $request created by $(field '{.spec.requester.username}') — $(field '{.status.phase}') (policy $(field '{.status.policy}'), needs 1 approval)"

step "kubectl gatehouse approve $request --reason ok   # alice, her own request"
if gatehouse_as alice approve "$request" --reason ok 2>"$demo/self-approve.err"; then
  fail "alice approved her own request"
fi
say "$(sed 's/^error: //' "$demo/self-approve.err" | head -1)"

step "kubectl gatehouse approve $request --reason \"ok, INC-4711\"   # as bob, while alice waits"
gatehouse_as bob approve "$request" --reason "ok, INC-4711" >/dev/null || fail "bob could not approve"
wait "$asking" || fail "alice's request did not end Issued: $(cat "$demo/request.err")"
await_phase Issued
say "Approved by $(field '{.status.approvals[*].user}') — $(field '{.status.phase}')"
tr '\r' '\n' <"$demo/request.err" | grep -E '^(AccessRequest|Issued)' | sed 's/^/  alice: /'
[[ -s "$dir/alice/id_ed25519-cert.pub" ]] || fail "kubectl gatehouse wrote no certificate"
cert="$(ssh-keygen -L -f "$dir/alice/id_ed25519-cert.pub")" || fail "the certificate does not parse"
principals="$(awk '/Principals:/ {p=1; next} /Critical Options:/ {p=0} p {gsub(/^ +/, ""); printf "%s%s", sep, $0; sep=","}' <<<"$cert")"
say "certificate issued ttl=$(field '{.status.grantedDuration}') principals=[$principals] serial=$(field '{.status.serial}')"
say "$(grep -E '^\s+(Key ID|Valid):' <<<"$cert" | sed -E 's/^\s+//' | paste -sd ';' | sed 's/;/; /')"

step "kubectl gatehouse ssh prod-db-01 -- 'uname -a; id -un'"
if ! output="$(gatehouse_as alice ssh prod-db-01 --key "$dir/alice/id_ed25519.pub" -- 'uname -a; id -un' 2>"$demo/ssh.err")"; then
  cat "$demo/ssh.err" >&2
  fail "ssh through the proxy failed (proxy log: $dir/proxy.log)"
fi
sed 's/^/  /' <<<"$output"
[[ "$(tail -1 <<<"$output")" == "$login" ]] || fail "the command did not run as $login on prod-db-01"

key="$(await_field 30 '{.status.sessions[0].recording.key}')" || fail "no recording in status.sessions (proxy log: $dir/proxy.log)"
sha="$(field '{.status.sessions[0].recording.sha256}')"
GATEHOUSE_RECORDINGS=local
# shellcheck disable=SC1091
[[ -f "$dir/recordings.env" ]] && source "$dir/recordings.env"
if [[ "$GATEHOUSE_RECORDINGS" == local ]]; then
  file="$dir/$key"
  say "recording → $key (sha256 ${sha:0:16}…, $(field '{.status.sessions[0].recording.bytes}') bytes)"
else
  object="${GATEHOUSE_S3_PREFIX}$key"
  say "recording → s3://$GATEHOUSE_S3_BUCKET/$object (sha256 ${sha:0:16}…, $(field '{.status.sessions[0].recording.bytes}') bytes)"
  if [[ "$GATEHOUSE_S3_PATH_STYLE" == true ]]; then
    url="$GATEHOUSE_S3_ENDPOINT/$GATEHOUSE_S3_BUCKET/$object"
  else
    url="${GATEHOUSE_S3_ENDPOINT%%://*}://$GATEHOUSE_S3_BUCKET.${GATEHOUSE_S3_ENDPOINT#*://}/$object"
  fi
  file="$demo/$(basename "$key")"
  step "curl --aws-sigv4 aws:amz:$GATEHOUSE_S3_REGION:s3 --user \$AWS_ACCESS_KEY_ID:… -o $file $url"
  curl -fsS --aws-sigv4 "aws:amz:$GATEHOUSE_S3_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -o "$file" "$url" || fail "cannot fetch $url (proxy log: $dir/proxy.log)"
fi
[[ -f "$file" ]] || fail "$file does not exist"
[[ "$(sha256sum "$file" | cut -d' ' -f1)" == "$sha" ]] || fail "$file does not match the sha256 in status"
say "sha256 of $file matches status"

step "asciinema cat $file"
# `asciinema cat` insists on a terminal; without one (CI, a pipe) it gets a pseudo-terminal.
if [[ -t 0 && -t 1 ]]; then
  replay="$(asciinema cat "$file" </dev/tty)" || fail "asciinema cannot read $file"
else
  replay="$(python3 "$here/pty-session.py" '[]' -- asciinema cat "$file")" || fail "asciinema cannot read $file"
fi
sed 's/^/  /' <<<"$replay"
grep -q "$(head -1 <<<"$output")" <<<"$replay" || fail "the replay lacks the session's output"

step "kubectl gatehouse revoke $request --reason done   # as bob"
gatehouse_as bob revoke "$request" --reason "done" >/dev/null || fail "bob could not revoke"
await_phase Revoked
if ssh -F "$dir/ssh_config" prod-db-01 true 2>"$demo/ssh-revoked.err"; then
  fail "ssh still works after the revoke"
fi
say "Revoked; ssh now fails: $(tail -1 "$demo/ssh-revoked.err")"

printf '\ndemo passed: request → approve → certificate → recorded session → replay → revoke\n'
