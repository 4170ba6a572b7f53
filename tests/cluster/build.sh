#!/usr/bin/env bash
# Builds the local cluster's binaries (control plane, KWOK, helm, and the real node's kubelet,
# kube-proxy and image registry) from their Go modules (through the Go module proxy)
# into ~/.cache/hubgrade/cluster/<k8s-version>/bin, once per pinned version.
# Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
cache="${HUBGRADE_CACHE:-$HOME/.cache/hubgrade}/cluster/$K8S_VERSION"
bin="$cache/bin"
src="$cache/src"
mkdir -p "$bin" "$src"
log() { echo "[cluster-build] $*" >&2; }

# A stamp per component records the version it was built from, so a changed pin rebuilds it.
built() { [[ -x "$bin/$1" && "$(cat "$bin/.$1.version" 2>/dev/null)" == "$2" ]]; }
stamp() { echo "$2" > "$bin/.$1.version"; }

build_kubernetes() {
  local want="v$K8S_VERSION" minor patch
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  patch="$(echo "$K8S_VERSION" | cut -d. -f3)"
  # kubelet and kube-proxy run the real node (tests/cluster/node.sh); like the others, upstream
  # builds them with CGO_ENABLED=0 (static binaries).
  local missing=()
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    built "$b" "$want" || missing+=("$b")
  done
  (( ${#missing[@]} == 0 )) && return
  log "building Kubernetes $want (${missing[*]})"
  local dir="$src/kubernetes"
  mkdir -p "$dir"
  # k8s.io/kubernetes points every staging module at ./staging; a wrapper module must replace
  # each with its published twin k8s.io/<name> v0.<minor>.<patch>.
  local upstream_mod
  upstream_mod="$(go mod download -json "k8s.io/kubernetes@$want" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module hubgrade.local/cluster/kubernetes"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $want"
    echo
    echo "replace ("
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$upstream_mod" \
      | awk -v v="v0.$minor.$patch" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$dir/go.mod"
  cat > "$dir/tools.go" <<'GO'
//go:build tools

// Package tools keeps the Kubernetes commands in this wrapper module's build list.
package tools
GO
  local pkg="k8s.io/kubernetes/cmd"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$want -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.gitCommit=v$K8S_VERSION-gomod -X $p.buildDate=$date"
  done
  (
    cd "$dir"
    go mod download k8s.io/kubernetes
    for b in "${missing[@]}"; do
      log "  go build $b"
      go get "$pkg/$b@$want" >/dev/null 2>&1 || go get "$pkg/$b"
      go build -trimpath -ldflags "$ld" -o "$bin/$b" "$pkg/$b"
      stamp "$b" "$want"
    done
  )
}

build_etcd() {
  local want="v$ETCD_VERSION"
  built etcd "$want" && return
  log "building etcd $want"
  local dir="$src/etcd"
  mkdir -p "$dir"
  cat > "$dir/go.mod" <<MOD
module hubgrade.local/cluster/etcd

go 1.24.0

require go.etcd.io/etcd/server/v3 $want
MOD
  cat > "$dir/main.go" <<'GO'
// Command etcd runs the etcd server from its published Go module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (
    cd "$dir"
    go mod tidy >/dev/null 2>&1 || go mod tidy
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .
  )
  stamp etcd "$want"
}

build_installable() { # name version module/path@version
  built "$1" "$2" && return
  log "building $1 $2"
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "$3"
  stamp "$1" "$2"
}

build_etcd
build_installable kwok "v$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
build_installable helm "v$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
# The registry of distribution serves the real node's images (tests/cluster/node.sh).
build_installable registry "v$DISTRIBUTION_VERSION" \
  "github.com/distribution/distribution/v3/cmd/registry@v$DISTRIBUTION_VERSION"
build_kubernetes
echo "$bin"
