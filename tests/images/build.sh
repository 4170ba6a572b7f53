#!/usr/bin/env bash
# Builds the images of the local test cluster as OCI image layouts, without a container daemon:
# debootstrap makes Debian root file systems, chroot installs into them, umoci packs them into
# layers and writes the image config. Run as root. See tests/images/README.md.
#
#   tests/images/build.sh [NAME...]     NAME: a full image name (quay.io/jupyterhub/k8s-hub:3.3.8)
#                                       or its last part (k8s-hub:3.3.8, busybox, hubgrade)
#                                       no NAME: every image
#
# Prints one line per image on stdout: "<image name> <OCI layout directory>"; the layout holds the
# image under its tag (skopeo: oci:<dir>:<tag>). Everything is cached under
# ~/.cache/hubgrade/images by the hash of what each step reads (the step's code, the pinned
# requirements, the versions, the hubgrade binary): a rebuild with nothing changed takes seconds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${HUBGRADE_IMAGES_CACHE:-${HUBGRADE_CACHE:-$HOME/.cache/hubgrade}/images}
MIRROR=${HUBGRADE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
HUBGRADE_VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
HUBGRADE_BIN=${HUBGRADE_BIN:-$repo/target/release/hubgrade}

ALL=(
  quay.io/jupyterhub/k8s-hub:3.3.8
  quay.io/jupyterhub/k8s-hub:4.4.0
  quay.io/jupyterhub/configurable-http-proxy:4.6.1
  docker.io/library/busybox:1.36
  "ghcr.io/hubgrade/hubgrade:$HUBGRADE_VERSION"
  # Test-only images derived from k8s-hub:4.4.0 (tests/e2e_real.rs): a migration that really
  # fails halfway; a hub that never starts while its upgrade-db works.
  ghcr.io/hubgrade/test-k8s-hub:4.4.0-broken-migration
  ghcr.io/hubgrade/test-k8s-hub:4.4.0-never-ready
)

log() { echo "[images] $*" >&2; }
die() { echo "[images] error: $*" >&2; exit 1; }
key() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# in_root ROOT CMD...: runs CMD chrooted in ROOT with a clean environment (the host's PIP_*, npm
# and proxy settings stay out), /proc, /dev and a tmpfs /tmp mounted in a private mount namespace
# (they vanish with it, whatever happens). IN_ROOT_USER=uid:gid runs CMD as that user.
in_root() {
  local root=$1; shift
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  unshare --mount --propagation private sh -ec '
    root=$1; user=$2; shift 2
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    exec chroot ${user:+--userspec=$user} "$root" "$@"' sh "$root" "${IN_ROOT_USER:-}" \
    /usr/bin/env -i PATH="${IN_ROOT_PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}" \
    HOME="${IN_ROOT_HOME:-/root}" LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# clean_root ROOT: removes what an image does not need (apt lists and caches, logs, docs, man
# pages, locales, device nodes, the build host's resolv.conf).
clean_root() {
  local r=$1
  ! grep -q " $r/" /proc/self/mountinfo || die "something is mounted under $r"
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/cache/debconf/*-old \
    "$r"/var/lib/dpkg/*-old "$r"/var/log/* "$r"/tmp/* "$r"/var/tmp/* "$r"/root/.cache \
    "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* "$r"/usr/share/lintian \
    "$r"/dev/* "$r"/proc/* "$r"/sys/* "$r"/etc/resolv.conf
  find "$r/usr/share/doc" -type f ! -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  echo localhost >"$r/etc/hostname"
  write_hosts "$r"
}

# A default /etc/hosts for running outside Kubernetes (the kubelet mounts its own).
write_hosts() { printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$1/etc/hosts"; }

# stage DIR FUNCTION ARGS...: runs FUNCTION DIR.tmp ARGS... unless DIR exists, then renames
# DIR.tmp to DIR: a step that fails or is interrupted leaves no cache entry behind.
stage() {
  local dir=$1 fn=$2; shift 2
  if [[ -e $dir ]]; then log "cached: $dir"; return; fi
  log "building $(basename "$dir")"
  local start=$SECONDS
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp"
  "$fn" "$dir.tmp" "$@" >&2
  mv "$dir.tmp" "$dir"
  log "built $(basename "$dir") in $((SECONDS - start))s"
}

# A new OCI layout at DIR with an empty image tagged TAG.
new_layout() { [[ ! -d $1 ]] || rmdir "$1"; umoci init --layout "$1" && umoci new --image "$1:$2"; }

# ---------------------------------------------------------------------------------------------
# Debian bookworm minbase with the current stable updates, shared by the hub and proxy images.
step_debian() {
  local out=$1 r=$1/rootfs
  debootstrap --variant=minbase "$SUITE" "$r" "$MIRROR" >"$out/debootstrap.log" 2>&1 ||
    { tail -n 30 "$out/debootstrap.log" >&2; die "debootstrap failed"; }
  cat >"$r/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
  # Like Debian's slim images: no docs, man pages or translations; no recommended packages.
  cat >"$r/etc/dpkg/dpkg.cfg.d/01-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  echo 'APT::Install-Recommends "false";' >"$r/etc/apt/apt.conf.d/01-no-recommends"
  in_root "$r" sh -ec 'apt-get update -qq; apt-get -y -qq upgrade >/dev/null'
}

# The hub images' runtime root (Python 3.11, libcurl, libpq, sqlite3, tini, user jovyan) and,
# from it, a build root with compilers and headers in which the Python packages are installed.
step_hub_roots() {
  local out=$1 debian=$2 r=$1/runtime b=$1/build
  cp -a "$debian/rootfs" "$r"
  in_root "$r" sh -ec '
    apt-get -y -qq install python3 libcurl4 libpq5 sqlite3 tini ca-certificates >/dev/null
    groupadd --gid 1000 jovyan
    useradd --uid 1000 --gid 1000 --create-home --home-dir /home/jovyan --shell /bin/bash jovyan
    mkdir -p /srv/jupyterhub /usr/local/etc/jupyterhub
    chown jovyan:jovyan /srv/jupyterhub'
  cp -a "$r" "$b"
  in_root "$b" sh -ec '
    apt-get -y -qq install python3-venv python3-dev gcc libc6-dev libcurl4-openssl-dev libpq-dev >/dev/null'
  clean_root "$r"
  new_layout "$out/oci" base
  umoci insert --image "$out/oci:base" "$r" / >/dev/null
  umoci gc --layout "$out/oci"
  rm -rf "$r"
}

# The Python packages of one z2jh hub image, from its pinned requirements, in a venv at
# /opt/venv made in the build root (pycurl from source, as z2jh builds it; psycopg2 is a source
# distribution and compiles against libpq).
step_hub_venv() {
  local out=$1 build=$2 requirements=$3
  cp "$requirements" "$build/root/requirements.txt"
  # pip trusts the build host's CA bundle (hosts behind a TLS-inspecting proxy need that); the
  # bundle stays in the build root only for this step.
  cp -L /etc/ssl/certs/ca-certificates.crt "$build/root/host-ca.crt"
  rm -rf "$build/opt/venv"
  in_root "$build" sh -ec '
    python3 -m venv /opt/venv
    PIP_CERT=/root/host-ca.crt /opt/venv/bin/pip install --no-cache-dir --quiet \
      --no-binary pycurl -r /root/requirements.txt
    /opt/venv/bin/pip check'
  rm -f "$build/root/requirements.txt" "$build/root/host-ca.crt"
  rm -rf "$build/root/.cache"
  mv "$build/opt/venv" "$out/venv"
}

HUB_PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The hub image: the shared base layer plus the venv layer, and z2jh's image config.
step_hub_image() {
  local out=$1 base=$2 venv=$3 tag=$4
  cp -a "$base/oci/." "$out/"
  umoci tag --image "$out:base" "$tag"
  umoci rm --image "$out:base"
  umoci insert --image "$out:$tag" "$venv/venv" /opt/venv >/dev/null
  umoci config --image "$out:$tag" \
    --config.user 1000 --config.workingdir /srv/jupyterhub \
    --config.env "PATH=$HUB_PATH" --config.env LANG=C.UTF-8 --config.env PYTHONUNBUFFERED=1 \
    --config.entrypoint tini --config.entrypoint -- \
    --config.cmd jupyterhub --config.cmd --config \
    --config.cmd /usr/local/etc/jupyterhub/jupyterhub_config.py \
    --config.exposedports 8081/tcp \
    --config.label "org.opencontainers.image.description=local equivalent of z2jh's hub image $tag"
  umoci gc --layout "$out"
  verify_hub "$out" "$tag"
}

# Unpacks the image and checks it chrooted as jovyan: the JupyterHub version, the imports z2jh
# needs, and `jupyterhub upgrade-db` on a fresh SQLite database.
verify_hub() {
  local layout=$1 tag=$2 bundle want
  want=$(sed -n 's/^jupyterhub==//p' "$here/hub/requirements-$tag.txt")
  bundle=$(mktemp -d)
  umoci unpack --image "$layout:$tag" "$bundle/b" >/dev/null
  local got
  got=$(IN_ROOT_USER=1000:1000 IN_ROOT_HOME=/home/jovyan IN_ROOT_PATH=$HUB_PATH \
    in_root "$bundle/b/rootfs" sh -ec '
      cd /srv/jupyterhub
      jupyterhub --version
      python -c "import kubespawner, pycurl, psycopg2, pymysql, sqlalchemy; print(pycurl.version)" >&2
      command -v alembic >&2
      jupyterhub upgrade-db --db=sqlite:////tmp/x.sqlite >&2
      python - >&2 <<EOF
import sqlite3
print("fresh database at alembic revision", sqlite3.connect("/tmp/x.sqlite").execute("select version_num from alembic_version").fetchone()[0])
EOF')
  rm -rf "$bundle"
  [[ $got == "$want" ]] || die "k8s-hub:$tag: jupyterhub --version says '$got', expected $want"
  log "verified k8s-hub:$tag: jupyterhub $got, imports, upgrade-db on a fresh database"
}

# A test image: k8s-hub:4.4.0 plus one layer from tests/images/hub/test/ (see ALL above).
step_test_hub_image() {
  local out=$1 base=$2 tag=$3 layer
  layer=$(mktemp -d)
  case $tag in
    4.4.0-broken-migration)
      local versions=$layer/opt/venv/lib/python3.11/site-packages/jupyterhub/alembic/versions
      mkdir -p "$versions"
      install -m 0644 "$here/hub/test/ffffbroken01_fails_on_purpose.py" "$versions/"
      ;;
    4.4.0-never-ready)
      install -D -m 0755 "$here/hub/test/jupyterhub-never-ready" "$layer/opt/venv/bin/jupyterhub"
      ;;
    *) die "unknown test hub image $tag" ;;
  esac
  cp -a "$base/." "$out/"
  umoci tag --image "$out:4.4.0" "$tag"
  umoci rm --image "$out:4.4.0"
  # umoci insert adds the folder's content as a new layer over the image's /.
  umoci insert --image "$out:$tag" "$layer" / >/dev/null
  umoci gc --layout "$out"
  rm -rf "$layer"
}

# ---------------------------------------------------------------------------------------------
# configurable-http-proxy: Debian's Node.js 18, the npm package installed with npm (it is plain
# JavaScript) under /usr/local, as the unprivileged user nobody (65534) like the upstream image.
step_proxy_image() {
  local out=$1 debian=$2 version=$3 tmp r
  tmp=$(mktemp -d)
  r=$tmp/rootfs
  cp -a "$debian/rootfs" "$r"
  in_root "$r" sh -ec 'apt-get -y -qq install nodejs ca-certificates >/dev/null'
  clean_root "$r"
  mkdir -p "$tmp/local"
  env -u NPM_CONFIG_PREFIX npm install --global --prefix "$tmp/local" --no-audit --no-fund \
    --loglevel=error "configurable-http-proxy@$version" >&2
  ! find "$tmp/local" -name '*.node' | grep -q . || die "configurable-http-proxy has native code"
  cp -a "$tmp/local/." "$r/usr/local/"
  chown -R root:root "$r/usr/local"
  new_layout "$out" "$version"
  umoci insert --image "$out:$version" "$r" / >/dev/null
  umoci config --image "$out:$version" \
    --config.user 65534 --config.workingdir / \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.entrypoint configurable-http-proxy \
    --config.exposedports 8000/tcp --config.exposedports 8001/tcp
  umoci gc --layout "$out"
  local got
  got=$(IN_ROOT_USER=65534:65534 in_root "$r" sh -ec 'node --version >&2; configurable-http-proxy --version')
  rm -rf "$tmp"
  [[ $got == "$version" ]] || die "configurable-http-proxy --version says '$got', expected $version"
  log "verified configurable-http-proxy:$version"
}

# ---------------------------------------------------------------------------------------------
# busybox for tests: Debian's static busybox with a link per applet, root, CMD ["sh"].
step_busybox_image() {
  local out=$1 tag=$2 r
  r=$(mktemp -d)/rootfs
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home,var/tmp,proc,dev,sys}
  ! ldd /bin/busybox >/dev/null 2>&1 || die "/bin/busybox is not static: install busybox-static"
  cp /bin/busybox "$r/bin/busybox"
  local applet
  for applet in $("$r/bin/busybox" --list-full); do
    [[ -e $r/$applet ]] || ln -s /bin/busybox "$r/$applet"
  done
  chmod 1777 "$r/tmp" "$r/var/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$r/etc/group"
  write_hosts "$r"
  new_layout "$out" "$tag"
  umoci insert --image "$out:$tag" "$r" / >/dev/null
  umoci config --image "$out:$tag" \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.cmd sh
  umoci gc --layout "$out"
  in_root "$r" sh -c 'echo busybox $(busybox | head -n1 | cut -d" " -f2) works' >&2
  rm -rf "$(dirname "$r")"
}

# ---------------------------------------------------------------------------------------------
# hubgrade: the binary at /usr/local/bin/hubgrade, the database clients its Dump backups run
# (Debian's pg_dump and pg_restore, mariadb-dump and mariadb as mysqldump and mysql), the shared
# libraries they need (ldd), CA certificates (Debian's ca-certificates), user nonroot 65532,
# ENTRYPOINT ["hubgrade"]; no shell, no package manager.
dump_tools() {
  local pg
  pg=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  printf '%s\n' "$pg/pg_dump:pg_dump" "$pg/pg_restore:pg_restore" \
    "$(command -v mariadb-dump):mysqldump" "$(command -v mariadb):mysql"
}
step_hubgrade_image() {
  local out=$1 bin=$2 tag=$3 r lib tool
  r=$(mktemp -d)/rootfs
  mkdir -p "$r"/{usr/local/bin,etc/ssl/certs,tmp,home/nonroot}
  install -m 0755 "$bin" "$r/usr/local/bin/hubgrade"
  for tool in $(dump_tools); do
    install -m 0755 "${tool%%:*}" "$r/usr/local/bin/${tool##*:}"
  done
  for lib in $( (ldd "$bin"; for tool in $(dump_tools); do ldd "${tool%%:*}"; done) | grep -o '/[^ ]*' | sort -u); do
    cp --parents -L "$lib" "$r/"
  done
  # Debian's Mozilla CA set only: the build host's own bundle may hold local CAs (a proxy's).
  cat /usr/share/ca-certificates/mozilla/*.crt >"$r/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$r/etc/group"
  echo 'hosts: files dns' >"$r/etc/nsswitch.conf"
  write_hosts "$r"
  chmod 1777 "$r/tmp"
  chown 65532:65532 "$r/home/nonroot"
  new_layout "$out" "$tag"
  umoci insert --image "$out:$tag" "$r" / >/dev/null
  umoci config --image "$out:$tag" \
    --config.user 65532:65532 --config.workingdir /home/nonroot \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --config.entrypoint hubgrade
  umoci gc --layout "$out"
  chroot --userspec=65532:65532 "$r" /usr/local/bin/hubgrade version >&2
  for tool in pg_dump pg_restore mysqldump mysql; do
    chroot --userspec=65532:65532 "$r" "/usr/local/bin/$tool" --version >&2
  done
  rm -rf "$(dirname "$r")"
}

# ---------------------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, chroot and file ownership need it)"
for tool in debootstrap umoci unshare chroot; do
  command -v "$tool" >/dev/null || die "$tool missing: run tests/install-deps.sh"
done

# Resolves the command line's names to full names.
names=()
(($# > 0)) || set -- "${ALL[@]}"
for arg in "$@"; do
  found=""
  for full in "${ALL[@]}"; do
    last=${full##*/}
    if [[ $arg == "$full" || $arg == "$last" || $arg == "${last%%:*}" ]]; then
      found=$full
      names+=("$full")
    fi
  done
  [[ -n $found ]] || die "unknown image $arg (known: ${ALL[*]})"
done

mkdir -p "$CACHE/steps"
# One build at a time per cache: a second run waits, then finds the first one's results.
exec 9>"$CACHE/.lock"
flock 9
debian_dir() {
  local k
  k=$(key "$(declare -f step_debian in_root)" "$SUITE" "$MIRROR")
  stage "$CACHE/steps/debian-$SUITE-$k" step_debian
  echo "$CACHE/steps/debian-$SUITE-$k"
}
hub_roots_dir() {
  local debian k
  debian=$(debian_dir)
  k=$(key "$debian" "$(declare -f step_hub_roots clean_root write_hosts new_layout)")
  stage "$CACHE/steps/hub-roots-$k" step_hub_roots "$debian"
  echo "$CACHE/steps/hub-roots-$k"
}

hub_image_dir() {
  local tag=$1 requirements roots k venv
  requirements=$here/hub/requirements-$tag.txt
  roots=$(hub_roots_dir)
  k=$(key "$roots" "$(declare -f step_hub_venv)" "$(cat "$requirements")")
  venv=$CACHE/steps/hub-venv-$tag-$k
  stage "$venv" step_hub_venv "$roots/build" "$requirements"
  k=$(key "$venv" "$(declare -f step_hub_image verify_hub)" "$HUB_PATH")
  stage "$CACHE/k8s-hub-$tag-$k" step_hub_image "$roots" "$venv" "$tag"
  echo "$CACHE/k8s-hub-$tag-$k"
}

for name in "${names[@]}"; do
  repo_path=${name%:*} tag=${name##*:}
  short=${repo_path##*/}
  case $short in
    k8s-hub)
      out=$(hub_image_dir "$tag")
      ;;
    test-k8s-hub)
      base=$(hub_image_dir 4.4.0)
      k=$(key "$base" "$(declare -f step_test_hub_image)" "$(cat "$here"/hub/test/*)")
      out=$CACHE/test-k8s-hub-$tag-$k
      stage "$out" step_test_hub_image "$base" "$tag"
      ;;
    configurable-http-proxy)
      debian=$(debian_dir)
      k=$(key "$debian" "$(declare -f step_proxy_image clean_root write_hosts new_layout)")
      out=$CACHE/configurable-http-proxy-$tag-$k
      stage "$out" step_proxy_image "$debian" "$tag"
      ;;
    busybox)
      k=$(key "$(declare -f step_busybox_image write_hosts new_layout)" "$(sha256sum </bin/busybox)")
      out=$CACHE/busybox-$tag-$k
      stage "$out" step_busybox_image "$tag"
      ;;
    hubgrade)
      [[ -x $HUBGRADE_BIN ]] ||
        die "no hubgrade binary at $HUBGRADE_BIN: cargo build --release, or set HUBGRADE_BIN"
      k=$(key "$(declare -f step_hubgrade_image dump_tools write_hosts new_layout)" "$(sha256sum <"$HUBGRADE_BIN")" \
        "$(cat /usr/share/ca-certificates/mozilla/*.crt | sha256sum)" \
        "$(for t in $(dump_tools); do sha256sum <"${t%%:*}"; done)")
      out=$CACHE/hubgrade-$tag-$k
      stage "$out" step_hubgrade_image "$HUBGRADE_BIN" "$tag"
      ;;
  esac
  echo "$name $out"
done
