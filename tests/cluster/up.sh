#!/usr/bin/env bash
# Starts the local test cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
# and the KWOK controller with one fake node, all bound to 127.0.0.1; and one real node
# (tests/cluster/node.sh: containerd, kubelet, kube-proxy, an image registry, a volume
# provisioner) unless HUBGRADE_REAL_NODE=0.
# State lives in target/cluster/ (kubeconfig at target/cluster/kubeconfig); stop with down.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=ports.env
source "$here/ports.env"
state="${HUBGRADE_CLUSTER_DIR:-$repo/target/cluster}"
log() { echo "[cluster-up] $*" >&2; }
# The real node is the machine's (one bridge, one set of folders): by default only the cluster
# in target/cluster runs it; a cluster in another folder (HUBGRADE_CLUSTER_DIR, e.g.
# tests/cluster_lifecycle.rs's) runs KWOK only, unless HUBGRADE_REAL_NODE=1 is set.
if [[ -z "${HUBGRADE_REAL_NODE:-}" && "$state" != "$repo/target/cluster" ]]; then
  HUBGRADE_REAL_NODE=0
fi
# shellcheck source=node.sh
source "$here/node.sh"
# Even then, it runs without the real node while another cluster has it.
if node_enabled && [[ -n "$(node_owner)" && "$(node_owner)" != "$state" ]]; then
  log "the real node belongs to the cluster in $(node_owner): this one runs without it"
  HUBGRADE_REAL_NODE=0
fi
started=$SECONDS

bin="$("$here/build.sh")"
export PATH="$bin:$PATH"
mkdir -p "$state" && echo "$bin" > "$state/bin-dir"   # for down.sh (kube-proxy --cleanup)

# A running cluster is reused only if it was started from the same scripts and stages.
fingerprint="$( (cat "$here"/*.sh "$here"/*.env "$here"/*.yaml "$here"/images/*; echo "$HUBGRADE_REAL_NODE") \
  | sha256sum | cut -d' ' -f1)"
if [[ -f "$state/pids" && "$(cat "$state/fingerprint" 2>/dev/null)" == "$fingerprint" ]] \
   && "$bin/kubectl" --kubeconfig "$state/kubeconfig" --request-timeout=3s get --raw /readyz >/dev/null 2>&1 \
   && { ! node_enabled || "$bin/kubectl" --kubeconfig "$state/kubeconfig" --request-timeout=3s \
          wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s >/dev/null 2>&1; }; then
  log "already running; kubeconfig: $state/kubeconfig"
  exit 0
fi
"$here/down.sh" >/dev/null 2>&1 || true

node_enabled && node_check_host
# shellcheck disable=SC2046
for port in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$CONTROLLER_MANAGER_PORT" \
            "$SCHEDULER_PORT" "$KWOK_PORT" $(node_enabled && node_ports); do
  if ss -Htln "sport = :$port" | grep -q .; then
    log "port $port is already in use; set the ports in tests/cluster/ports.env or free it"
    exit 1
  fi
done

mkdir -p "$state/pki" "$state/logs"
rm -rf "$state/etcd"
pki="$state/pki"

# Certificates: one CA for serving and client certs, and a key pair for ServiceAccount tokens.
# Made again when the set of certificates or the node's address changes.
pki_layout="2 $NODE_NAME $NODE_IP"
if [[ ! -f "$pki/admin.crt" || "$(cat "$pki/layout" 2>/dev/null)" != "$pki_layout" ]]; then
  rm -f "$pki"/*
  log "generating certificates"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=hubgrade-test-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  issue_cert() { # name subject [subjectAltName]
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    local ext="$pki/$1.ext"
    # Extensions make a v3 certificate; rustls (the operator's TLS) refuses v1 ones.
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth,clientAuth" > "$ext"
    if [[ -n "${3:-}" ]]; then echo "subjectAltName=$3" >> "$ext"; fi
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -extfile "$ext" -out "$pki/$1.crt" 2>/dev/null
  }
  issue_cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  issue_cert admin "/O=system:masters/CN=hubgrade-admin"
  issue_cert controller-manager "/CN=system:kube-controller-manager"
  issue_cert scheduler "/CN=system:kube-scheduler"
  issue_cert kwok "/O=system:masters/CN=kwok-controller"
  # The real node: the kubelet's client (Node authorizer) and serving certificates, the
  # apiserver's client certificate towards the kubelet, kube-proxy's client certificate.
  issue_cert node "/O=system:nodes/CN=system:node:$NODE_NAME"
  issue_cert kubelet "/CN=$NODE_NAME" "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME"
  issue_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  issue_cert kube-proxy "/CN=system:kube-proxy"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  echo "$pki_layout" > "$pki/layout"
fi

write_kubeconfig() { # file user
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: hubgrade-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: hubgrade-test
  context: {cluster: hubgrade-test, user: $2, namespace: default}
current-context: hubgrade-test
KC
}
write_kubeconfig "$state/kubeconfig" admin
for c in controller-manager scheduler kwok node kube-proxy; do write_kubeconfig "$state/$c.kubeconfig" "$c"; done

: > "$state/pids"
start() { # name command...
  local name="$1"; shift
  setsid "$@" >"$state/logs/$name.log" 2>&1 < /dev/null &
  echo "$! $name" >> "$state/pids"
}
wait_for() { # description timeout-seconds command...
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      log "timed out waiting for $what; logs in $state/logs/"
      tail -n 20 "$state"/logs/*.log >&2 || true
      exit 1
    fi
    sleep 0.3
  done
}

log "starting etcd"
start etcd etcd --name hubgrade-test --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "hubgrade-test=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync --quota-backend-bytes=2147483648
wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

# With the real node, pods reach the apiserver through the kubernetes Service (10.96.0.1:443),
# which kube-proxy translates to the advertise address: the bridge's gateway $NODE_IP. The
# apiserver then binds 0.0.0.0 (one address only can be given) and node.sh's iptables guard
# lets only lo and the bridge reach its port; https://127.0.0.1:$APISERVER_PORT works as before.
advertise_ip=127.0.0.1
if node_enabled; then
  node_network_up
  advertise_ip="$NODE_IP"
fi
log "starting kube-apiserver"
start kube-apiserver kube-apiserver \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address "$( [[ $advertise_ip == 127.0.0.1 ]] && echo 127.0.0.1 || echo 0.0.0.0)" \
  --advertise-address "$advertise_ip" --secure-port "$APISERVER_PORT" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$pki/ca.crt" \
  --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --allow-privileged=true \
  --enable-priority-and-fairness=false \
  --event-ttl 2h
wait_for kube-apiserver 60 kubectl --kubeconfig "$state/kubeconfig" get --raw /readyz

log "starting kube-controller-manager, kube-scheduler and kwok"
start kube-controller-manager kube-controller-manager \
  --kubeconfig "$state/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
  --leader-elect=false \
  --controllers '*' \
  --service-account-private-key-file "$pki/sa.key" \
  --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=true \
  --concurrent-deployment-syncs 10 --concurrent-job-syncs 10
start kube-scheduler kube-scheduler \
  --kubeconfig "$state/scheduler.kubeconfig" \
  --authentication-kubeconfig "$state/scheduler.kubeconfig" \
  --authorization-kubeconfig "$state/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
  --leader-elect=false
# --cidr: the pod addresses of a KWOK node without a podCIDR of its own (the nodes some tests
# add) are loopback ones too (see nodes.yaml): never an address off this machine.
start kwok kwok \
  --kubeconfig "$state/kwok.kubeconfig" \
  --config "$here/kwok-stages.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-ip 127.0.0.1 \
  --cidr 127.2.0.0/16 \
  --server-address "127.0.0.1:$KWOK_PORT"

kubectl --kubeconfig "$state/kubeconfig" apply -f "$here/nodes.yaml" >/dev/null
kubectl --kubeconfig "$state/kubeconfig" apply -f "$here/snapshot-crds.yaml" >/dev/null
wait_for "the KWOK node to become Ready" 60 \
  kubectl --kubeconfig "$state/kubeconfig" wait --for=condition=Ready node/kwok-node-0 --timeout=1s
node_enabled && node_start
wait_for "the default ServiceAccount" 60 \
  kubectl --kubeconfig "$state/kubeconfig" get serviceaccount default -n default

echo "$fingerprint" > "$state/fingerprint"
log "cluster is up in $((SECONDS - started))s ($(kubectl --kubeconfig "$state/kubeconfig" version -o json \
  | jq -r .serverVersion.gitVersion))"
cat >&2 <<MSG
[cluster-up] use it with:
    export KUBECONFIG=$state/kubeconfig
    export PATH=$bin:\$PATH
    kubectl get nodes
[cluster-up] stop it with: make cluster-down
MSG
