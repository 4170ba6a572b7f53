#!/usr/bin/env bash
# `make demo`: the local cluster, the example z2jh hub, the operator, and one upgrade end to
# end, shown live. Exits 0 only if the upgrade Succeeded. On the real node: real/demo.sh.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ns=jhub
demo="$repo/target/demo"

say "starting the local cluster (built on first use)"
tests/cluster/up.sh
bin="$(tests/cluster/build.sh)"
export PATH="$bin:$PATH" KUBECONFIG="$repo/target/cluster/kubeconfig"
# With the real node, the real hub is upgraded for real (real/demo.sh); without it
# (HUBGRADE_REAL_NODE=0), the example hub below runs on KWOK with the agent stand-in.
if kubectl get node real-node-0 >/dev/null 2>&1; then
  exec examples/z2jh-hub/real/demo.sh
fi

say "building hubgrade"
cargo build --locked --quiet --workspace --bins

say "installing the HubUpgrade CRD and the operator's RBAC (namespace $ns)"
kubectl apply -f crds/hubupgrade.yaml
kubectl wait --for=condition=Established crd/hubupgrades.hubgrade.io --timeout=30s
if kubectl get namespace "$ns" >/dev/null 2>&1; then
  # An earlier run's upgrades keep their finalizer while no operator runs to release it.
  for upgrade in $(kubectl get hubupgrades -n "$ns" -o name); do
    kubectl patch -n "$ns" "$upgrade" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null
  done
  kubectl delete namespace "$ns" --wait=true --timeout=120s >/dev/null
fi
kubectl delete pv jhub-hub-db-dir --ignore-not-found >/dev/null
kubectl create namespace "$ns"
helm template hubgrade charts/hubgrade --namespace "$ns" --set watchNamespace="$ns" \
  --show-only templates/rbac.yaml | kubectl apply -f -
mkdir -p "$demo"
token="$(kubectl create token hubgrade -n "$ns" --duration=1h)"
server="$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')"
ca="$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')"
cat > "$demo/operator.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority: "$ca"}}]
users: [{name: hubgrade, user: {token: "$token"}}]
contexts: [{name: hubgrade, context: {cluster: local, user: hubgrade}}]
current-context: hubgrade
KC

say "creating the example hub (k8s-hub 4.1.0, SQLite on hub-db-dir)"
# No container runs on the local cluster: this directory stands for the hub-db-dir volume.
volume="$demo/volumes/$ns/hub-db-dir"
rm -rf "$demo/volumes/$ns" && mkdir -p "$volume"
python3 - "$volume/jupyterhub.sqlite" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
db.execute("INSERT INTO alembic_version VALUES ('0eee8c825d24')")
db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(255) UNIQUE, admin BOOLEAN)")
db.executemany("INSERT INTO users (name, admin) VALUES (?, ?)", [("alice", 1), ("bob", 0)])
db.commit()
PY
kubectl apply -n "$ns" -f examples/z2jh-hub/hub.yaml
kubectl wait -n "$ns" --for=condition=Available deployment/hub --timeout=60s

say "starting the operator (logs: target/demo/operator.log)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
KUBECONFIG="$demo/operator.kubeconfig" target/debug/hubgrade run --namespace "$ns" \
  --metrics-address 127.0.0.1:0 --lease-seconds 5 >"$demo/operator.log" 2>&1 &
pids+=($!)
target/debug/kwok-agent-standin --namespace "$ns" --volumes "$demo/volumes" >"$demo/standin.log" 2>&1 &
pids+=($!)

say "applying the HubUpgrade (examples/z2jh-hub/upgrade.yaml)"
kubectl apply -n "$ns" -f examples/z2jh-hub/upgrade.yaml
last=""
phase=""
for _ in $(seq 1 360); do
  line="$(kubectl get hubupgrade hub-to-4-2-0 -n "$ns" -o jsonpath='{.status.phase}{"\t"}{.status.message}' 2>/dev/null || true)"
  phase="${line%%$'\t'*}"
  if [[ "$line" != "$last" && -n "$phase" ]]; then
    printf '%s  %-12s %s\n' "$(date +%H:%M:%S)" "$phase" "${line#*$'\t'}"
    last="$line"
  fi
  case "$phase" in Succeeded|RolledBack|Failed) break ;; esac
  sleep 0.5
done

say "result"
kubectl get hubupgrade -n "$ns"
kubectl get hubupgrade hub-to-4-2-0 -n "$ns" -o json | jq -r '
  .status as $s
  | "phase:     \($s.phase)",
    "from:      \($s.from.image) (\($s.from.replicas) replica)",
    "to:        \($s.to.image)",
    "backup:    \($s.backup.reference) (\($s.backup.sizeBytes) bytes, \($s.backup.checksum))",
    "downtime:  \($s.downtimeSeconds // "?") seconds",
    "timeline:",
    ($s.steps[] | "  \(.name)\t\(.outcome // "")\t\(.startedAt)")'
echo "hub image now: $(kubectl get deployment hub -n "$ns" -o jsonpath='{.spec.template.spec.containers[0].image}')"
[[ "$phase" == "Succeeded" ]]
