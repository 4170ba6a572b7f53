#!/usr/bin/env bash
# Builds the kstatus test helper (main.go: what sigs.k8s.io/cli-utils/pkg/kstatus computes for an
# object, the rules of Flux's health checks) from its pinned Go module through the Go module
# proxy, into ~/.cache/hubgrade/kstatus/<hash of go.mod, go.sum, main.go>/kstatus, once.
# Prints the binary's path on stdout; progress goes to stderr. tests/gitops_health.rs runs it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v go >/dev/null || { echo "[kstatus-build] Go is required (the go command)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0

hash="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)"
dir="${HUBGRADE_CACHE:-$HOME/.cache/hubgrade}/kstatus/$hash"
bin="$dir/kstatus"
if [[ ! -x "$bin" ]]; then
  echo "[kstatus-build] building $bin" >&2
  mkdir -p "$dir"
  # Built beside, then renamed: a concurrent run never sees half a binary.
  (cd "$here" && go build -trimpath -ldflags "-s -w" -o "$bin.$$" .)
  mv -f "$bin.$$" "$bin"
fi
echo "$bin"
