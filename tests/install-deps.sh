#!/usr/bin/env bash
# Installs the system packages the tests and the demo need, from Debian's packages, when they are
# missing (as root, or with sudo). Rust and Go come with the machine; everything else the tests
# build or fetch themselves (cluster binaries, JupyterHub venvs, configurable-http-proxy).
# tests/images/ builds the test cluster's images with debootstrap and umoci and pushes them with
# skopeo (no container daemon).
set -euo pipefail

need=()
for tool in openssl:openssl curl:curl jq:jq ss:iproute2 setsid:util-linux runuser:util-linux \
            tac:coreutils psql:postgresql-client pg_dump:postgresql-client \
            mariadbd:mariadb-server mariadb-install-db:mariadb-server mysqldump:mariadb-client \
            mariadb:mariadb-client npm:npm python3:python3 \
            debootstrap:debootstrap umoci:umoci skopeo:skopeo update-ca-certificates:ca-certificates; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
# The database tests start private PostgreSQL and MariaDB servers from Debian's packages.
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
# The busybox test image is Debian's static busybox (tests/images/build.sh).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)

if (( ${#need[@]} > 0 )); then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "[deps] installing ${need[*]}" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
command -v go >/dev/null || { echo "[deps] Go is required to build the local cluster" >&2; exit 1; }
command -v cargo >/dev/null || { echo "[deps] Rust (cargo) is required" >&2; exit 1; }
