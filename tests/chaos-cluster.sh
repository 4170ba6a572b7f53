#!/usr/bin/env bash
# Runs the chaos that restarts the control plane (tests/e2e_chaos.rs, its ignored tests: etcd
# and kube-apiserver restarted in every phase of an upgrade) on a KWOK cluster of its own
# (target/chaos-cluster, its own ports), so the shared test cluster is never restarted under
# other tests. The cluster is started for the run and stopped after it, whatever the outcome.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
export HUBGRADE_CLUSTER_DIR="$repo/target/chaos-cluster"
export HUBGRADE_KUBECONFIG="$HUBGRADE_CLUSTER_DIR/kubeconfig"
export ETCD_CLIENT_PORT=25790 ETCD_PEER_PORT=25800 APISERVER_PORT=28443
export CONTROLLER_MANAGER_PORT=22257 SCHEDULER_PORT=22259 KWOK_PORT=22247
HUBGRADE_CLUSTER_BIN="$(tests/cluster/build.sh)"
export HUBGRADE_CLUSTER_BIN
stop() { tests/cluster/down.sh >/dev/null 2>&1 || true; }
trap stop EXIT
# A cluster left over from an interrupted run is started afresh.
stop
tests/cluster/up.sh
cargo test --locked --test e2e_chaos -- --ignored "$@"
