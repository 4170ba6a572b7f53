#!/usr/bin/env bash
# Tiny OCI image tools for the real node's built-in images, with nothing but tar, gzip, sha256sum,
# jq and curl (sourced by tests/cluster/node.sh; also usable by hand, see README.md):
#   oci_build ROOTFS LAYOUT CONFIG_JSON   one-layer image from a folder into an OCI layout folder
#   oci_push  LAYOUT REGISTRY REPO:TAG    the layout's image into a plain-HTTP v2 registry
# The layer is reproducible (sorted names, mtime 0, uid/gid 0), so the same folder gives the
# same digests.

oci_blob() { # layout file -> prints the digest; moves the file into blobs/sha256/
  local digest
  digest="sha256:$(sha256sum "$2" | cut -d' ' -f1)"
  mkdir -p "$1/blobs/sha256"
  mv "$2" "$1/blobs/sha256/${digest#sha256:}"
  echo "$digest"
}

oci_build() { # rootfs layout config-json (the image config's "config" object)
  local rootfs="$1" layout="$2" config="$3" tmp
  rm -rf "$layout"; mkdir -p "$layout"
  tmp="$(mktemp -d)"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$rootfs" -cf "$tmp/layer.tar" .
  local diff_id
  diff_id="sha256:$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)"
  gzip -n -9 "$tmp/layer.tar"
  local layer_size; layer_size="$(stat -c %s "$tmp/layer.tar.gz")"
  local layer; layer="$(oci_blob "$layout" "$tmp/layer.tar.gz")"
  jq -cn --argjson config "$config" --arg diff "$diff_id" \
    '{architecture: "amd64", os: "linux", created: "1970-01-01T00:00:00Z", config: $config,
      rootfs: {type: "layers", diff_ids: [$diff]}}' > "$tmp/config.json"
  local config_size; config_size="$(stat -c %s "$tmp/config.json")"
  local config_digest; config_digest="$(oci_blob "$layout" "$tmp/config.json")"
  jq -cn --arg c "$config_digest" --argjson cs "$config_size" --arg l "$layer" --argjson ls "$layer_size" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l, size: $ls}]}' \
    > "$tmp/manifest.json"
  local manifest_size; manifest_size="$(stat -c %s "$tmp/manifest.json")"
  local manifest; manifest="$(oci_blob "$layout" "$tmp/manifest.json")"
  jq -cn --arg m "$manifest" --argjson ms "$manifest_size" \
    '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: $m, size: $ms, platform: {architecture: "amd64", os: "linux"}}]}' > "$layout/index.json"
  echo '{"imageLayoutVersion": "1.0.0"}' > "$layout/oci-layout"
  rm -rf "$tmp"
}

oci_push() { # layout registry(host:port) repo:tag
  local layout="$1" registry="$2" repo="${3%:*}" tag="${3##*:}"
  local manifest; manifest="$(jq -r '.manifests[0].digest' "$layout/index.json")"
  local mfile="$layout/blobs/sha256/${manifest#sha256:}"
  local digest
  for digest in $(jq -r '.config.digest, .layers[].digest' "$mfile"); do
    curl -sf -o /dev/null -I "http://$registry/v2/$repo/blobs/$digest" && continue
    local location
    location="$(curl -sf -D - -o /dev/null -X POST "http://$registry/v2/$repo/blobs/uploads/" \
      | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')"
    [[ -n "$location" ]] || { echo "oci_push: the registry refused an upload to $repo" >&2; return 1; }
    [[ "$location" == http* ]] || location="http://$registry$location"
    local sep='?'; [[ "$location" == *\?* ]] && sep='&'
    curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' \
      --data-binary "@$layout/blobs/sha256/${digest#sha256:}" "$location${sep}digest=$digest" \
      || { echo "oci_push: uploading $digest to $repo failed" >&2; return 1; }
  done
  curl -sf -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$mfile" "http://$registry/v2/$repo/manifests/$tag" \
    || { echo "oci_push: putting the manifest of $repo:$tag failed" >&2; return 1; }
}
