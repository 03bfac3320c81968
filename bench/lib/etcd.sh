# shellcheck shell=bash
# Sourced by bench suites: installs (if missing) and starts a throwaway 3-member etcd cluster from
# Debian's etcd-server package (3.4), every member on free loopback ports in a temp dir. etcd fsyncs
# its WAL before it acknowledges a write (the default), so its puts are durable like KyroDB's.
# Sets ETCD_DIR, ETCD_CLIENT_URLS (array), ETCD_PIDS (array); etcd_leader_url prints the leader's
# client URL; etcd_stop tears everything down (call it from the suite's EXIT trap too).
# Usage: source bench/lib/etcd.sh; etcd_start; url="$(etcd_leader_url)"; ...; etcd_stop

ETCD_DIR=""
ETCD_CLIENT_URLS=()
ETCD_PIDS=()
ETCD_MEMBERS=3
# How long the members may take to answer after start, and to agree on a leader.
ETCD_START_WAIT_S_MAX=${ETCD_START_WAIT_S_MAX:-60}

etcd_log() { echo "[bench/etcd] $*" >&2; }

etcd_install() {
  if command -v etcd >/dev/null 2>&1; then return 0; fi
  etcd_log "installing etcd-server from Debian packages ..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server) >&2
  command -v etcd >/dev/null 2>&1 || { etcd_log "etcd-server install failed (no etcd on PATH)"; return 1; }
}

etcd_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# url -> the JSON of POST /v3/maintenance/status (empty when the member does not answer).
etcd_status() {
  curl -s -m 2 -XPOST "$1/v3/maintenance/status" -d '{}' 2>/dev/null || true
}

# json -> "member_id leader" (both empty when the answer has no leader yet).
etcd_status_ids() {
  python3 -c '
import json, sys
try:
    s = json.loads(sys.argv[1])
    print(s.get("header", {}).get("member_id", ""), s.get("leader", ""))
except Exception:
    print("", "")
' "$1"
}

etcd_start() {
  etcd_install || return 1
  ETCD_DIR="$(mktemp -d /tmp/kyrodb-bench-etcd.XXXXXX)"
  local i cport pport initial="" peers=() clients=()
  for ((i = 1; i <= ETCD_MEMBERS; i++)); do
    cport="$(etcd_free_port)"
    pport="$(etcd_free_port)"
    clients+=("$cport")
    peers+=("$pport")
    initial+="${initial:+,}e$i=http://127.0.0.1:$pport"
  done
  ETCD_CLIENT_URLS=()
  ETCD_PIDS=()
  for ((i = 1; i <= ETCD_MEMBERS; i++)); do
    cport="${clients[$((i - 1))]}"
    pport="${peers[$((i - 1))]}"
    etcd --name "e$i" --data-dir "$ETCD_DIR/e$i" \
      --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
      --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
      --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token kyrodb-bench \
      --logger zap --log-level warn --log-outputs stderr \
      >"$ETCD_DIR/e$i.log" 2>&1 </dev/null &
    ETCD_PIDS+=("$!")
    ETCD_CLIENT_URLS+=("http://127.0.0.1:$cport")
  done
  # Bounded wait until every member answers its status.
  local t ok url
  for ((t = 0; t < ETCD_START_WAIT_S_MAX * 10; t++)); do
    ok=0
    for url in "${ETCD_CLIENT_URLS[@]}"; do
      [[ "$(etcd_status "$url")" == *'"member_id"'* ]] && ok=$((ok + 1))
    done
    [ "$ok" = "$ETCD_MEMBERS" ] && break
    for i in "${!ETCD_PIDS[@]}"; do
      if ! kill -0 "${ETCD_PIDS[$i]}" 2>/dev/null; then
        etcd_log "etcd member e$((i + 1)) exited at start; its log:"
        tail -20 "$ETCD_DIR/e$((i + 1)).log" >&2 || true
        return 1
      fi
    done
    sleep 0.1
  done
  if [ "$ok" != "$ETCD_MEMBERS" ]; then
    etcd_log "only $ok of $ETCD_MEMBERS etcd members answer /v3/maintenance/status after ${ETCD_START_WAIT_S_MAX}s"
    return 1
  fi
  etcd_log "etcd $(etcd --version | awk '/etcd Version/ {print $3}'): $ETCD_MEMBERS members at ${ETCD_CLIENT_URLS[*]}"
}

# Prints the leader's client URL: the member whose status names itself (header.member_id) as the
# leader. Bounded wait while an election is in progress.
etcd_leader_url() {
  local t url ids
  for ((t = 0; t < ETCD_START_WAIT_S_MAX * 10; t++)); do
    for url in "${ETCD_CLIENT_URLS[@]}"; do
      read -r -a ids <<<"$(etcd_status_ids "$(etcd_status "$url")")"
      if [ "${#ids[@]}" = 2 ] && [ "${ids[0]}" = "${ids[1]}" ]; then
        echo "$url"
        return 0
      fi
    done
    sleep 0.1
  done
  etcd_log "no etcd member reports itself leader after ${ETCD_START_WAIT_S_MAX}s"
  return 1
}

etcd_stop() {
  # The data is thrown away, so no clean shutdown: a SIGTERMed etcd leader first tries to hand its
  # leadership to a member that is stopping too, which costs seconds.
  local p
  for p in "${ETCD_PIDS[@]:-}"; do
    if [ -n "$p" ]; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  for p in "${ETCD_PIDS[@]:-}"; do
    if [ -n "$p" ]; then wait "$p" 2>/dev/null || true; fi
  done
  ETCD_PIDS=()
  if [ -n "$ETCD_DIR" ] && [ -d "$ETCD_DIR" ]; then rm -rf "$ETCD_DIR"; fi
  ETCD_DIR=""
}
