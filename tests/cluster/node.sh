# The real node of the local test cluster: containerd + runc from Debian's packages, kubelet and
# kube-proxy built by build.sh, a pod bridge, a local image registry, a local-volume provisioner.
# Sourced by up.sh (node_network_up before the apiserver starts, node_start after the control
# plane) and by down.sh (node_down); uses their `log`, `start`, `wait_for`, `$state`, `$bin`.
#
# Why Debian's containerd 1.6.20 works with kubelet 1.34: kubelet 1.34 speaks only CRI v1
# (runtime.v1), which containerd serves since 1.5 (1.6 serves v1 and v1alpha2), and kubelet 1.34
# still supports cgroup v1 when failCgroupV1 is false (this machine has cgroup v1).
#
# Global side effects (all undone by node_down): the bridge $NODE_BRIDGE and a route of
# $SERVICE_CIDR onto it; sysctls (ip_forward, and those the kubelet sets: vm.overcommit_memory,
# kernel.panic, kernel.panic_on_oops), restored from $NODE_RUN/sysctl.saved; iptables chains
# KUBE-* (kube-proxy, kubelet), CNI-* (portmap), HUBGRADE-NODE* (ours) in iptables and ip6tables;
# cgroups /sys/fs/cgroup/*/kubepods; mounts under $NODE_LIB and $NODE_RUN (pod network
# namespaces too); symlinks in /var/log/containers; go-cni's cache files in /var/lib/cni/results;
# shim sockets in /run/containerd/s (removed by the shims). Global folders that did not exist
# before are removed again when empty.

# shellcheck disable=SC2154 # here, state, bin: set by up.sh and down.sh, which source this file
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=node.env
source "$here/node.env"
# shellcheck source=images/oci.sh
source "$here/images/oci.sh"

node_sock="$NODE_RUN/containerd/containerd.sock"
node_network="hubgrade-pods"
node_registries=(docker.io quay.io registry.k8s.io ghcr.io)

node_enabled() { [[ "$HUBGRADE_REAL_NODE" != 0 ]]; }
node_ports() { echo "$REGISTRY_PORT $KUBELET_PORT $KUBELET_HEALTHZ_PORT $KUBE_PROXY_HEALTHZ_PORT $KUBE_PROXY_METRICS_PORT"; }

# The node is one per machine: $NODE_RUN/owner names the cluster state folder that runs it,
# while that cluster's containerd lives (a crashed owner's leftovers are anybody's to clean).
node_owner() {
  local owner pid name
  owner="$(cat "$NODE_RUN/owner" 2>/dev/null)" || return 0
  [[ -f "$owner/pids" ]] || return 0
  while read -r pid name; do
    if [[ "$name" == containerd ]] && kill -0 "$pid" 2>/dev/null; then echo "$owner"; return 0; fi
  done < "$owner/pids"
  return 0
}

node_check_host() {
  local missing=()
  for tool in containerd runc ctr iptables iptables-save ip6tables conntrack gcc tar gzip; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap && -x /bin/busybox ]] \
    || missing+=(containernetworking-plugins/busybox-static)
  if (( ${#missing[@]} > 0 )); then
    log "the real node needs ${missing[*]}: run tests/install-deps.sh (or set HUBGRADE_REAL_NODE=0)"
    exit 1
  fi
  if [[ $(id -u) -ne 0 ]]; then
    log "the real node needs root (or set HUBGRADE_REAL_NODE=0)"
    exit 1
  fi
  local owner; owner="$(node_owner)"
  if [[ -n "$owner" && "$owner" != "$state" ]]; then
    log "the real node is in use by the cluster in $owner: stop that one first (HUBGRADE_CLUSTER_DIR=$owner tests/cluster/down.sh), or set HUBGRADE_REAL_NODE=0"
    exit 1
  fi
}

# Saves a sysctl's value once (the value before any cluster run), then sets it.
node_sysctl() { # key value
  local file="/proc/sys/${1//.//}"
  [[ -w "$file" ]] || { log "sysctl $1 is not writable here; leaving it"; return 0; }
  grep -q "^$1=" "$NODE_RUN/sysctl.saved" 2>/dev/null || echo "$1=$(cat "$file")" >> "$NODE_RUN/sysctl.saved"
  echo "$2" > "$file"
}

# iptables guards of ours: pods reach each other, the host and Services, never the outside
# network (this machine may not send traffic out); the apiserver, which binds 0.0.0.0 so that pods
# reach it on the bridge, answers only on lo and the bridge.
node_guards() { # iptables-command
  local ipt="$1"
  $ipt -w -N HUBGRADE-NODE-FORWARD 2>/dev/null || $ipt -w -F HUBGRADE-NODE-FORWARD
  $ipt -w -A HUBGRADE-NODE-FORWARD -i "$NODE_BRIDGE" -o "$NODE_BRIDGE" -j RETURN
  $ipt -w -A HUBGRADE-NODE-FORWARD -j DROP
  $ipt -w -N HUBGRADE-NODE-INPUT 2>/dev/null || $ipt -w -F HUBGRADE-NODE-INPUT
  $ipt -w -A HUBGRADE-NODE-INPUT -i lo -j RETURN
  $ipt -w -A HUBGRADE-NODE-INPUT -i "$NODE_BRIDGE" -j RETURN
  $ipt -w -A HUBGRADE-NODE-INPUT -j DROP
  $ipt -w -I FORWARD 1 -i "$NODE_BRIDGE" -j HUBGRADE-NODE-FORWARD
  $ipt -w -I FORWARD 1 -o "$NODE_BRIDGE" -j HUBGRADE-NODE-FORWARD
  $ipt -w -I INPUT 1 -p tcp -m multiport --dports "$APISERVER_PORT,$KUBELET_PORT" -j HUBGRADE-NODE-INPUT
}

# Before the apiserver starts: it advertises $NODE_IP, the bridge's address.
node_network_up() {
  node_check_host
  mkdir -p "$NODE_RUN" "$NODE_LIB"
  echo "$state" > "$NODE_RUN/owner"
  # Remember the global folders that we create, so that node_down removes only those.
  for d in /var/log/containers /run/netns /var/lib/cni /run/containerd; do
    [[ -e "$d" ]] || echo "$d" >> "$NODE_RUN/created-dirs"
  done
  ip link add "$NODE_BRIDGE" type bridge 2>/dev/null || true
  ip addr replace "$NODE_IP/${NODE_POD_CIDR#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # Service addresses that kube-proxy does not (yet) translate go to the bridge, never out.
  ip route replace "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"
  node_sysctl net.ipv4.ip_forward 1
  # br_netfilter is built into this kernel (no module to load) when /proc/sys/net/bridge exists;
  # bridged pod-to-pod traffic then passes iptables, which Services between pods need.
  if [[ -d /proc/sys/net/bridge ]]; then
    node_sysctl net.bridge.bridge-nf-call-iptables 1
  else
    modprobe br_netfilter 2>/dev/null || log "no br_netfilter: Services between pods of the node may not answer"
  fi
  node_guards iptables
}

node_images() { # builds (once, cached by content) and pushes the built-in images
  local cache="${HUBGRADE_CACHE:-$HOME/.cache/hubgrade}/node-images" key tmp
  mkdir -p "$cache"
  local registry="127.0.0.1:$REGISTRY_PORT"

  # registry.k8s.io/pause: Kubernetes' own pause.c of the pinned release, linked statically.
  local pause_c
  pause_c="$(GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
    | jq -r .Dir)/build/pause/linux/pause.c"
  key="$( (cat "$pause_c" "$here/images/oci.sh"; echo "$PAUSE_VERSION"; gcc --version) | sha256sum | cut -c1-16)"
  if [[ ! -f "$cache/pause-$key/index.json" ]]; then
    log "building registry.k8s.io/pause:$PAUSE_VERSION from $pause_c"
    tmp="$(mktemp -d)"; mkdir -p "$tmp/rootfs"
    gcc -Os -Wall -static -DVERSION="v$PAUSE_VERSION-hubgrade" -o "$tmp/rootfs/pause" "$pause_c"
    strip "$tmp/rootfs/pause"
    oci_build "$tmp/rootfs" "$tmp/layout" '{"Entrypoint": ["/pause"], "User": "65535:65535"}'
    rm -rf "$cache/pause-$key"; mv "$tmp/layout" "$cache/pause-$key"; rm -rf "$tmp"
  fi
  oci_push "$cache/pause-$key" "$registry" "registry.k8s.io/pause:$PAUSE_VERSION"

  # docker.io/library/busybox: Debian's busybox-static, for tests (sh, wget, nc, httpd).
  local busybox_tag
  busybox_tag="$( (/bin/busybox 2>&1 || true) | sed -n '1s/^BusyBox v\([0-9]*\.[0-9]*\).*/\1/p')"
  key="$( (cat /bin/busybox "$here/images/oci.sh") | sha256sum | cut -c1-16)"
  if [[ ! -f "$cache/busybox-$key/index.json" ]]; then
    log "building docker.io/library/busybox:$busybox_tag from /bin/busybox"
    tmp="$(mktemp -d)"; mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/tmp" "$tmp/rootfs/etc" "$tmp/rootfs/var/www"
    chmod 1777 "$tmp/rootfs/tmp"
    cp /bin/busybox "$tmp/rootfs/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
      [[ "$applet" == busybox ]] || ln -s busybox "$tmp/rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
      > "$tmp/rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$tmp/rootfs/etc/group"
    oci_build "$tmp/rootfs" "$tmp/layout" \
      '{"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}'
    rm -rf "$cache/busybox-$key"; mv "$tmp/layout" "$cache/busybox-$key"; rm -rf "$tmp"
  fi
  oci_push "$cache/busybox-$key" "$registry" "docker.io/library/busybox:$busybox_tag"
  echo "$busybox_tag" > "$state/busybox-tag"
}

node_containerd_config() {
  local dir="$NODE_LIB/containerd/certs.d" r
  mkdir -p "$NODE_LIB/cni/net.d" "$dir/_default"
  # Every registry is the local one: quay.io/jupyterhub/k8s-hub:3.3.8 is pulled from
  # http://127.0.0.1:$REGISTRY_PORT/v2/quay.io/jupyterhub/k8s-hub/manifests/3.3.8, so images keep
  # their real names. `server` is the local registry too, so nothing falls back to the internet.
  for r in "${node_registries[@]}"; do
    mkdir -p "$dir/$r"
    cat > "$dir/$r/hosts.toml" <<TOML
server = "http://127.0.0.1:$REGISTRY_PORT/v2/$r"
override_path = true

[host."http://127.0.0.1:$REGISTRY_PORT/v2/$r"]
  capabilities = ["pull", "resolve"]
  override_path = true
TOML
  done
  # Any other registry: its repository path, without the host name, in the local registry.
  cat > "$dir/_default/hosts.toml" <<TOML
server = "http://127.0.0.1:$REGISTRY_PORT"

[host."http://127.0.0.1:$REGISTRY_PORT"]
  capabilities = ["pull", "resolve"]
TOML
  cat > "$NODE_LIB/cni/net.d/10-hubgrade.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$node_network",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$NODE_LIB/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  cat > "$NODE_LIB/containerd.toml" <<TOML
version = 2
root = "$NODE_LIB/containerd"
state = "$NODE_RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$node_sock"

[ttrpc]
  address = "$node_sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_LIB/opt"

[plugins."io.containerd.runtime.v1.linux"]
  state = "$NODE_RUN/runtime-v1"
  runtime_root = "$NODE_RUN/runc-v1"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:$PAUSE_VERSION"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # This machine denies CAP_SYS_RESOURCE: no oom_score_adj below containerd's own (0), else runc
  # fails with "can't get final child's PID from pipe" (the kubelet asks -998 for sandboxes).
  restrict_oom_score_adj = true
  enable_selinux = false
  max_container_log_line_size = 16384
  # Pod network namespaces under $NODE_RUN rather than /run/netns.
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$NODE_RUN/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_LIB/cni/net.d"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir"
TOML
}

node_kubelet_config() {
  local pki="$state/pki"
  mkdir -p "$NODE_LIB/kubelet" "$NODE_LIB/pod-logs"
  cat > "$NODE_LIB/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$node_sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
podLogsDir: $NODE_LIB/pod-logs
# No cluster DNS; pods get an empty resolv.conf rather than the host's (no outside lookups).
resolvConf: ""
registerWithTaints:
- {key: hubgrade.io/real-node, value: "true", effect: NoSchedule}
# A nearly full disk must not evict pods or delete images in tests.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "0%", nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}
serializeImagePulls: false
maxPods: 110
nodeStatusReportFrequency: 1m
shutdownGracePeriod: 0s
YAML
}

node_kube_proxy_config() {
  cat > "$NODE_LIB/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $NODE_POD_CIDR
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
# NodePorts only on the bridge address, never on the machine's network interfaces or 127.0.0.1
# (which would need net.ipv4.conf.all.route_localnet=1).
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false, masqueradeAll: false}
# 0: leave the machine's conntrack settings as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
oomScoreAdj: 0
YAML
}

node_start() {
  local kc="$state/kubeconfig"
  mkdir -p "$state/registry" "$state/volumes"
  log "starting the image registry on 127.0.0.1:$REGISTRY_PORT"
  cat > "$state/registry.yaml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $state/registry}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$REGISTRY_PORT
  debug: {addr: ""}
YAML
  start registry env -u REGISTRY_PORT OTEL_TRACES_EXPORTER=none registry serve "$state/registry.yaml"
  wait_for "the registry" 30 curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/"
  node_images

  log "starting containerd ($node_sock)"
  node_containerd_config
  mkdir -p "$NODE_RUN/containerd"
  start containerd containerd --config "$NODE_LIB/containerd.toml"
  wait_for containerd 30 ctr --address "$node_sock" version

  log "starting kubelet ($NODE_NAME) and kube-proxy"
  for k in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
           kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
    # The kubelet sets these itself; they are saved first so that down.sh restores them.
    grep -q "^$k=" "$NODE_RUN/sysctl.saved" 2>/dev/null || echo "$k=$(sysctl -n "$k")" >> "$NODE_RUN/sysctl.saved"
  done
  node_kubelet_config
  start kubelet kubelet --config "$NODE_LIB/kubelet.yaml" --kubeconfig "$state/node.kubeconfig" \
    --root-dir "$NODE_LIB/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "hubgrade.io/node=real" --v=1
  node_kube_proxy_config
  start kube-proxy kube-proxy --config "$NODE_LIB/kube-proxy.yaml" --v=1

  kubectl --kubeconfig "$kc" apply -f "$here/real-node.yaml" >/dev/null
  start provisioner env KUBECONFIG="$kc" NODE_NAME="$NODE_NAME" VOLUMES="$state/volumes" \
    "$here/provisioner.sh"
  wait_for "node $NODE_NAME to become Ready" 90 \
    kubectl --kubeconfig "$kc" wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
}

# Stops the node's processes (by the pids up.sh recorded) and removes everything it made.
# Safe when nothing is up; never fails.
node_down() {
  local -; set +e +o pipefail
  local owner; owner="$(node_owner)"
  if [[ -n "$owner" && "$owner" != "$state" ]]; then
    log "leaving the real node alone: it belongs to the cluster in $owner"
    return 0
  fi
  # shellcheck disable=SC2034 # read by down.sh
  node_was_ours=1
  stop_named() { # name...: the processes up.sh recorded under these names
    [[ -f "$state/pids" ]] || return 0
    local pid name want
    for want in "$@"; do
      while read -r pid name; do
        [[ "$name" == "$want" ]] || continue
        if kill -0 "$pid" 2>/dev/null; then
          kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
          for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
          kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
          log "stopped $name ($pid)"
        fi
      done < "$state/pids"
    done
  }
  stop_named provisioner kube-proxy kubelet

  # Every container and sandbox of the node, while containerd still answers.
  if [[ -S "$node_sock" ]] && ctr --address "$node_sock" version >/dev/null 2>&1; then
    local c=(ctr --address "$node_sock" -n k8s.io) id n=0
    for id in $("${c[@]}" tasks ls -q 2>/dev/null); do
      "${c[@]}" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1
      n=$((n + 1))
    done
    for id in $("${c[@]}" tasks ls -q 2>/dev/null); do "${c[@]}" tasks delete -f "$id" >/dev/null 2>&1; done
    for id in $("${c[@]}" containers ls -q 2>/dev/null); do "${c[@]}" containers delete "$id" >/dev/null 2>&1; done
    (( n > 0 )) && log "killed $n containers of $NODE_NAME"
  fi
  stop_named containerd registry
  # Shims outlive containerd by design; ours name our containerd's socket.
  local p
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null < "$p/cmdline" | grep -q -- "-address $node_sock "; then
      kill -KILL "${p#/proc/}" 2>/dev/null && log "killed shim ${p#/proc/}"
    fi
  done

  # kube-proxy's own cleanup first; then whatever is left of KUBE-*, CNI-* and ours.
  if [[ -x "${bin:-}/kube-proxy" ]] && iptables-save 2>/dev/null | grep -q -- '-j KUBE-'; then
    "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  local ipt t
  for ipt in iptables ip6tables; do
    command -v "$ipt-save" >/dev/null || continue
    for t in filter nat mangle raw; do
      local rules
      rules="$("$ipt-save" -t "$t" 2>/dev/null)" || continue
      grep -qE '(^:| -j | -g )(KUBE-|CNI-|HUBGRADE-NODE)' <<< "$rules" || continue
      grep -vE '(^:|^-A |-j |-g )(KUBE-|CNI-|HUBGRADE-NODE)' <<< "$rules" | "$ipt-restore" -w -T "$t" \
        && log "removed the node's $ipt chains from table $t"
    done
  done

  # Network namespaces (CRI's cni-*), then the bridge (its route goes with it).
  for p in /run/netns/cni-*; do
    [[ -e "$p" ]] || continue
    ip netns delete "${p##*/}" 2>/dev/null || { umount "$p" 2>/dev/null; rm -f "$p"; }
  done
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && ip link delete "$NODE_BRIDGE" && log "removed bridge $NODE_BRIDGE"
  # go-cni's result cache (CRI's loopback network and ours)
  rm -f /var/lib/cni/results/"$node_network"-* /var/lib/cni/results/cni-loopback-* 2>/dev/null

  # Mounts under the private folders, deepest first (overlay rootfs, shm, volumes, tokens).
  local m
  awk '{print $5}' /proc/self/mountinfo | grep -E "^($NODE_LIB|$NODE_RUN)(/|$)" | sort -r \
    | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  # Pod cgroups (cgroupfs driver), deepest first.
  for p in /sys/fs/cgroup/*/kubepods; do
    [[ -d "$p" ]] && find "$p" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  [[ -d /var/log/containers ]] && find /var/log/containers -lname "$NODE_LIB/*" -delete 2>/dev/null

  # Sysctls back to what they were before the first start.
  if [[ -f "$NODE_RUN/sysctl.saved" ]]; then
    local key value
    while IFS='=' read -r key value; do
      echo "$value" > "/proc/sys/${key//.//}" 2>/dev/null
    done < "$NODE_RUN/sysctl.saved"
    log "restored sysctls: $(tr '\n' ' ' < "$NODE_RUN/sysctl.saved")"
  fi
  if [[ -f "$NODE_RUN/created-dirs" ]]; then
    # Only empty folders go: another containerd of the machine may have files there now.
    while read -r p; do [[ -d "$p" ]] && find "$p" -depth -type d -empty -delete 2>/dev/null; done \
      < "$NODE_RUN/created-dirs"
  fi
  rm -rf --one-file-system "$NODE_RUN" "$NODE_LIB" 2>/dev/null \
    || log "could not remove all of $NODE_RUN and $NODE_LIB (a mount left?)"
  return 0
}
