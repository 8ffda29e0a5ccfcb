#!/bin/bash
# Enables MicroK8s addons, in order, each one given as one argument (e.g. dns:10.0.0.10).
# `microk8s enable` fetches from the network (the community repository is a git clone, some
# addons download charts and manifests): the containerd proxies, when set, are exported to it.
# Usage: 60-enable-addons.sh [--proxy HTTP_PROXY HTTPS_PROXY NO_PROXY] ADDON...   (empty: not set)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

synopsis="[--proxy HTTP_PROXY HTTPS_PROXY NO_PROXY] ADDON..."
if [[ ${1:-} == --proxy ]]; then
  (($# >= 4)) || usage "${synopsis}"
  for var in http_proxy https_proxy no_proxy; do
    value=$2
    shift
    if [[ -n ${value} ]]; then
      export "${var}=${value}" "${var^^}=${value}"
    fi
  done
  shift
fi
(($# > 0)) || usage "${synopsis}"

# The community repository ships with MicroK8s 1.24 and newer; older versions have none.
if ! timeout 300 microk8s enable community >/dev/null 2>&1; then
  log "the community addons repository is not available"
fi
for addon in "$@"; do
  retry 3 10 "enabling addon ${addon}" timeout 900 microk8s enable "${addon}"
  wait_apiserver
  log "enabled addon ${addon}"
done
