#!/usr/bin/env bash
# Installs each pinned JupyterHub release from PyPI into a cached virtual environment, once.
# Also installs configurable-http-proxy (npm), which a running hub needs.
# Prints the venvs' root directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
root="${HUBGRADE_CACHE:-$HOME/.cache/hubgrade}/venvs"
python="${PYTHON:-python3}"
mkdir -p "$root"
for version in $JUPYTERHUB_VERSIONS; do
  venv="$root/jupyterhub-$version"
  [[ -f "$venv/.complete" ]] && continue
  echo "[venvs] installing JupyterHub $version into $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "jupyterhub==$version" $DRIVERS >&2
  "$venv/bin/jupyterhub" --version >/dev/null
  touch "$venv/.complete"
done
chp="${HUBGRADE_CACHE:-$HOME/.cache/hubgrade}/chp-$CHP_VERSION"
if [[ ! -x "$chp/node_modules/.bin/configurable-http-proxy" ]]; then
  echo "[venvs] installing configurable-http-proxy $CHP_VERSION into $chp" >&2
  mkdir -p "$chp"
  (cd "$chp" && npm install --silent --no-audit --no-fund "configurable-http-proxy@$CHP_VERSION" >&2)
fi
echo "$root"
