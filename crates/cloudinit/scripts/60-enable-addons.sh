#!/bin/bash
# Enables MicroK8s addons, in order, each one given as one argument (e.g. dns:10.0.0.10).
# Usage: 60-enable-addons.sh ADDON...
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# > 0)) || usage "ADDON..."

# The community repository ships with MicroK8s 1.24 and newer; older versions have none.
if ! timeout 300 microk8s enable community >/dev/null 2>&1; then
  log "the community addons repository is not available"
fi
for addon in "$@"; do
  retry 3 10 "enabling addon ${addon}" timeout 900 microk8s enable "${addon}"
  wait_apiserver
  log "enabled addon ${addon}"
done
