#!/usr/bin/env bash
# The provisioner of StorageClass hubgrade-local (tests/cluster/real-node.yaml), started by up.sh:
# every Pending claim of that class gets a local PersistentVolume on $NODE_NAME whose folder is
# $VOLUMES/<namespace>/<claim>/; a released volume of the class is deleted (its folder stays, for
# a look after a test). It acts on a claim event or every 5 seconds.
# Needs KUBECONFIG, NODE_NAME, VOLUMES; kubectl and jq on PATH.
set -uo pipefail
class=hubgrade-local

reconcile() {
  kubectl get pvc -A -o json | jq -r --arg class "$class" '.items[]
    | select(.spec.storageClassName == $class and .status.phase == "Pending"
             and (.spec.volumeName // "") == "")
    | [.metadata.namespace, .metadata.name, .metadata.uid,
       (.spec.resources.requests.storage // "1Gi"), (.spec.accessModes // ["ReadWriteOnce"] | tojson),
       (.spec.volumeMode // "Filesystem")] | @tsv' \
  | while IFS=$'\t' read -r ns name uid size modes mode; do
      [[ "$mode" == Filesystem ]] || { echo "claim $ns/$name: volumeMode $mode is not supported" >&2; continue; }
      local dir="$VOLUMES/$ns/$name"
      mkdir -p "$dir" && chmod 0777 "$dir"
      kubectl create -f - >/dev/null <<PV && echo "bound claim $ns/$name to $dir" >&2
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pvc-$uid
  annotations: {pv.kubernetes.io/provisioned-by: hubgrade.io/local}
  labels: {hubgrade.io/claim-namespace: "$ns"}
spec:
  capacity: {storage: "$size"}
  accessModes: $modes
  volumeMode: Filesystem
  persistentVolumeReclaimPolicy: Delete
  storageClassName: $class
  claimRef: {namespace: "$ns", name: "$name", uid: "$uid"}
  local: {path: "$dir"}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: ["$NODE_NAME"]}]
PV
    done
  kubectl get pv -o json | jq -r --arg class "$class" '.items[]
    | select(.spec.storageClassName == $class and .status.phase == "Released"
             and .spec.persistentVolumeReclaimPolicy == "Delete") | .metadata.name' \
  | while read -r pv; do
      kubectl delete pv "$pv" --wait=false >/dev/null && echo "deleted released volume $pv" >&2
    done
}

while true; do
  # One watch at a time; every event (and every 5 s of silence) reconciles everything.
  kubectl get pvc -A --watch-only -o name 2>/dev/null | {
    reconcile
    while true; do
      read -r -t 5 _; status=$?
      (( status > 128 || status == 0 )) || exit 0   # EOF: the watch ended; start a new one
      reconcile
    done
  }
  sleep 1
done
