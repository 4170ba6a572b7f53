#!/usr/bin/env bash
# Stops every process tests/cluster/up.sh started and waits until their ports are free; removes
# what the real node made (containers, mounts, network namespaces, the bridge, iptables chains,
# cgroups, sysctls: see node.sh). Safe to run when nothing is up.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=ports.env
source "$here/ports.env"
state="${HUBGRADE_CLUSTER_DIR:-$repo/target/cluster}"
log() { echo "[cluster-down] $*" >&2; }
bin="$(cat "$state/bin-dir" 2>/dev/null)"
# shellcheck source=node.sh
source "$here/node.sh"

# The real node first (its containers while containerd still answers), whether or not it is
# enabled now: it may have been when the cluster started.
node_down

if [[ -f "$state/pids" ]]; then
  # Reverse start order: the clients first, etcd last.
  tac "$state/pids" | while read -r pid name; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      log "stopped $name ($pid)"
    fi
  done
  rm -f "$state/pids"
fi

busy=()
for _ in $(seq 1 50); do
  busy=()
  for port in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$CONTROLLER_MANAGER_PORT" \
              "$SCHEDULER_PORT" "$KWOK_PORT" $( [[ -n "${node_was_ours:-}" ]] && node_ports); do
    ss -Htln "sport = :$port" | grep -q . && busy+=("$port")
  done
  (( ${#busy[@]} == 0 )) && break
  sleep 0.1
done
if (( ${#busy[@]} > 0 )); then
  log "ports still bound: ${busy[*]}"
  exit 1
fi
log "cluster is down"
