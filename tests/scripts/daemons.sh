# Daemons of a test plane, shared by control-plane.sh and node.sh (sourced, not run). Each runs
# in its own session (so stopping it stops what it spawned), logs to DIR/NAME.log and records
# its pid in DIR/NAME.pid. The sourcing script defines log().

# Start a daemon in its own session: start_daemon NAME DIR CMD...
start_daemon() {
  local name="$1" dir="$2"; shift 2
  setsid "$@" >"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

# Stop it: SIGTERM to its session, SIGKILL after STOP_GRACE tenths of a second (default 100).
stop_daemon() {
  local name="$1" dir="$2" pid
  [[ -f "$dir/$name.pid" ]] || return 0
  pid="$(cat "$dir/$name.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 "${STOP_GRACE:-100}"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) ignored SIGTERM; killing"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$dir/$name.pid"
}
