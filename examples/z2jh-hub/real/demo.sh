#!/usr/bin/env bash
# `make demo` on the real node: the real z2jh-shaped hub (k8s-hub 3.3.8, JupyterHub 4.1.6) with
# 200 users made through its API, the operator installed with the chart from its image, and one
# upgrade to k8s-hub 4.4.0 (JupyterHub 5.5.0) shown live; prints the downtime the operator
# recorded next to the one seen through the proxy, and where the backup is. Exits 0 only if the
# upgrade Succeeded. Run by examples/z2jh-hub/demo.sh when the cluster has its real node.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$repo"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ns=jhub-real
demo="$repo/target/demo-real"
source tests/cluster/ports.env
registry="127.0.0.1:${REGISTRY_PORT:-25000}"
bin="$(tests/cluster/build.sh)"
export PATH="$bin:$PATH" KUBECONFIG="$repo/target/cluster/kubeconfig"
start=$SECONDS
mkdir -p "$demo"

say "building hubgrade (debug build) and the images (cached), pushing them to $registry"
cargo build --locked --quiet --bin hubgrade
pushed="$(HUBGRADE_BIN="$repo/target/debug/hubgrade" tests/images/push.sh "$registry" \
  k8s-hub:3.3.8 k8s-hub:4.4.0 configurable-http-proxy hubgrade)"
# By digest: a node holding an older build under the same tag runs this one.
image="$(grep '/ghcr.io/hubgrade/hubgrade:' <<<"$pushed" | sed "s|^$registry/||")"

say "a fresh namespace $ns, the CRD, the operator by helm install ($image)"
if kubectl get namespace "$ns" >/dev/null 2>&1; then
  # The earlier run's operator still runs there: it lets its upgrades go when they are deleted.
  kubectl delete hubupgrades -n "$ns" --all --timeout=60s >/dev/null 2>&1 || true
  for upgrade in $(kubectl get hubupgrades -n "$ns" -o name); do
    kubectl patch -n "$ns" "$upgrade" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null
  done
  kubectl delete namespace "$ns" --wait=true --timeout=120s >/dev/null
fi
# The claim's folder outlives its volume: the earlier run's database must not come back.
rm -rf "$repo/target/cluster/volumes/$ns"
kubectl create namespace "$ns"
kubectl apply -f crds/hubupgrade.yaml >/dev/null
kubectl wait --for=condition=Established crd/hubupgrades.hubgrade.io --timeout=30s >/dev/null
helm install hubgrade charts/hubgrade --namespace "$ns" --set watchNamespace="$ns" \
  --set image.repository="${image%%:*}" --set image.tag="${image#*:}" \
  --set 'nodeSelector.hubgrade\.io/node=real' \
  --set 'tolerations[0].key=hubgrade.io/real-node' --set 'tolerations[0].operator=Exists' \
  --set 'tolerations[0].effect=NoSchedule' >/dev/null
kubectl rollout status -n "$ns" deployment/hubgrade --timeout=180s

say "the real hub: k8s-hub 3.3.8 (JupyterHub 4.1.6), its proxy, SQLite on the claim hub-db-dir"
token="$(openssl rand -hex 32)"
# Fresh secrets into the manifest's placeholders; no secret is ever on a command line (the
# service's token reaches python through its environment).
TOKEN="$token" python3 -c '
import os, re, secrets, sys
text = open(sys.argv[1]).read().replace("@SERVICE_API_TOKEN@", os.environ["TOKEN"])
print(re.sub(r"@[A-Z_]+@", lambda m: secrets.token_hex(32), text))
' examples/z2jh-hub/real/hub.yaml | kubectl apply -n "$ns" -f - >/dev/null
kubectl rollout status -n "$ns" deployment/hub --timeout=300s
kubectl rollout status -n "$ns" deployment/proxy --timeout=300s
ip="$(kubectl get service -n "$ns" proxy-public -o jsonpath='{.spec.clusterIP}')"
# The service's token reaches curl on its standard input, never on a command line.
api() { printf 'header = "Authorization: token %s"\n' "$token" | curl -sS -K - "$@"; }
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$ip/hub/health")" == 200 ]]; do sleep 1; done
echo "hub at http://$ip/hub/ says: $(curl -s "http://$ip/hub/api")"
users="$(python3 -c 'import json; print(json.dumps({"usernames": ["user-%03d" % i for i in range(200)]}))')"
api -o /dev/null -X POST -d "$users" "http://$ip/hub/api/users"
api -o /dev/null -X POST -d '{"users": ["user-000", "user-001"]}' "http://$ip/hub/api/groups/researchers"
echo "made 200 users and the group researchers through the hub's API"

say "watching /hub/health through the proxy (target/demo-real/health.log)"
(while true; do
  printf '%s %s\n' "$(date +%s.%N)" "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "http://$ip/hub/health")"
  sleep 0.2
done) >"$demo/health.log" 2>/dev/null &
watcher=$!
trap 'kill $watcher 2>/dev/null || true' EXIT

say "applying the HubUpgrade (examples/z2jh-hub/real/upgrade.yaml)"
kubectl apply -n "$ns" -f examples/z2jh-hub/real/upgrade.yaml
last="" phase=""
for _ in $(seq 1 1800); do
  line="$(kubectl get hubupgrade hub-to-4-4-0 -n "$ns" -o jsonpath='{.status.phase}{"\t"}{.status.message}' 2>/dev/null || true)"
  phase="${line%%$'\t'*}"
  if [[ "$line" != "$last" && -n "$phase" ]]; then
    printf '%s  %-12s %s\n' "$(date +%H:%M:%S)" "$phase" "${line#*$'\t'}"
    last="$line"
  fi
  case "$phase" in Succeeded|RolledBack|Failed) break ;; esac
  sleep 0.5
done
# Until the watcher itself saw the hub answer again (at most a minute).
for _ in $(seq 1 300); do
  [[ "$(tail -n 1 "$demo/health.log")" == *" 200" ]] && break
  sleep 0.2
done
kill $watcher 2>/dev/null || true

say "result"
kubectl get hubupgrade -n "$ns"
status="$(kubectl get hubupgrade hub-to-4-4-0 -n "$ns" -o json)"
jq -r '.status as $s
  | "phase:      \($s.phase)",
    "from:       \($s.from.image) (\($s.from.replicas) replica)",
    "to:         \($s.to.image) (alembic \($s.to.revision // "?"))",
    "backup:     \($s.backup.reference) (\($s.backup.sizeBytes) bytes, \($s.backup.checksum))",
    "downtime:   \($s.downtimeSeconds // "?") s recorded by the operator"' <<<"$status"
seen="$(awk '$2 != "200" && !down {down = $1} $2 == "200" && down {printf "%.1f", $1 - down; exit}' "$demo/health.log")"
echo "            ${seen:-?} s seen through the proxy"
claim_pv="$(kubectl get pvc -n "$ns" hub-db-dir -o jsonpath='{.spec.volumeName}')"
folder="$(kubectl get pv "$claim_pv" -o jsonpath='{.spec.local.path}{.spec.hostPath.path}')"
reference="$(jq -r '.status.backup.reference' <<<"$status")"
echo "backup file on this machine: $folder/${reference#/srv/jupyterhub/}"
echo "hub now says: $(curl -s "http://$ip/hub/api")   users: $(api "http://$ip/hub/api/users?limit=200" | jq length) on the first page"
say "the operator's ledger (kubectl exec deploy/hubgrade -- hubgrade history)"
# Written a moment after the status: look until the finished upgrade is there.
for _ in $(seq 1 50); do
  history="$(kubectl exec -n "$ns" deploy/hubgrade -- hubgrade history -n "$ns" 2>/dev/null || true)"
  grep -q Succeeded <<<"$history" && break
  sleep 0.2
done
echo "$history"
echo "demo took $((SECONDS - start)) s"
[[ "$(jq -r .status.phase <<<"$status")" == "Succeeded" ]]
