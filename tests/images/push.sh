#!/usr/bin/env bash
# Copies the images that tests/images/build.sh builds (cached: nothing is rebuilt when nothing
# changed) into a plain-HTTP registry under their real names with the registry host replaced:
#
#   tests/images/push.sh HOST:PORT [NAME...]      (NAME as for build.sh; none: every image)
#
#   quay.io/jupyterhub/k8s-hub:3.3.8  -> HOST:PORT/quay.io/jupyterhub/k8s-hub:3.3.8
#   docker.io/library/busybox:1.36    -> HOST:PORT/docker.io/library/busybox:1.36
#   ghcr.io/hubgrade/hubgrade:0.1.0   -> HOST:PORT/ghcr.io/hubgrade/hubgrade:0.1.0
#
# The container runtime's mirror configuration maps quay.io, docker.io and ghcr.io to that
# registry, so pods keep the real image names. Prints each pushed reference and its digest.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
(($# >= 1)) || { echo "usage: $0 HOST:PORT [NAME...]" >&2; exit 2; }
registry=$1
shift
command -v skopeo >/dev/null || { echo "[images] skopeo missing: run tests/install-deps.sh" >&2; exit 1; }

built=$("$here/build.sh" "$@")
while read -r name layout; do
  path=$name   # the registry host stays in the path: the node's mirrors look there
  tag=${name##*:}
  dest=$registry/$path
  echo "[images] pushing $name to $dest" >&2
  digest_file=$(mktemp)
  # --insecure-policy: the images come from our own layouts, there are no signatures to check.
  skopeo --insecure-policy copy --quiet --dest-tls-verify=false --digestfile "$digest_file" \
    "oci:$layout:$tag" "docker://$dest"
  echo "$dest@$(cat "$digest_file")"
  rm -f "$digest_file"
done <<<"$built"
