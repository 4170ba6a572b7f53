#!/usr/bin/env bash
# Installs the system packages the tests and the demo need, from Debian's packages, when they are
# missing (as root, or with sudo). Rust and Go come with the machine; everything else the tests
# build or fetch themselves (cluster binaries, JupyterHub venvs, configurable-http-proxy).
# tests/images/ builds the test cluster's images with debootstrap and umoci and pushes them with
# skopeo (no container daemon). lua5.1 runs the Argo CD health check (tests/gitops_health.rs):
# Argo CD's own Lua (gopher-lua) is a Lua 5.1.
set -euo pipefail

need=()
for tool in openssl:openssl curl:curl jq:jq ss:iproute2 setsid:util-linux runuser:util-linux \
            tac:coreutils psql:postgresql-client pg_dump:postgresql-client \
            mariadbd:mariadb-server mariadb-install-db:mariadb-server mysqldump:mariadb-client \
            mariadb:mariadb-client npm:npm python3:python3 \
            debootstrap:debootstrap umoci:umoci skopeo:skopeo update-ca-certificates:ca-certificates \
            lua5.1:lua5.1; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
# The database tests start private PostgreSQL and MariaDB servers from Debian's packages.
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
# The cluster's real node (tests/cluster/node.sh): containerd 1.6 and runc from Debian (CRI v1,
# which kubelet 1.34 needs), the CNI plugins (bridge, host-local, portmap), iptables and conntrack
# for kube-proxy, busybox-static for the test image, a static libc for the pause image.
for tool in containerd:containerd ctr:containerd runc:runc iptables:iptables conntrack:conntrack \
            ip:iproute2 gzip:gzip tar:tar; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap ]] \
  || need+=(containernetworking-plugins)
[[ -x /bin/busybox ]] || need+=(busybox-static)
compgen -G "/usr/lib/*/libc.a" >/dev/null || need+=(libc6-dev)

if (( ${#need[@]} > 0 )); then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "[deps] installing ${need[*]}" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  # policy-rc.d 101: the containerd package must not start the system's containerd service
  # (the real node runs its own, with its own folders and socket).
  rc="/usr/sbin/policy-rc.d"
  if [[ ! -e "$rc" ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$rc" >/dev/null && $sudo chmod +x "$rc"
    trap '$sudo rm -f "$rc"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
command -v go >/dev/null || { echo "[deps] Go is required to build the local cluster" >&2; exit 1; }
command -v cargo >/dev/null || { echo "[deps] Rust (cargo) is required" >&2; exit 1; }
