#!/bin/bash
# First control plane node, last step: labels this node's Node object to tell the
# management cluster that the join token is registered and joins can succeed.
# Usage: 80-mark-accepts-joins.sh KEY=VALUE
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# != 1)) || [[ $1 != ?*=* ]]; then
  usage "KEY=VALUE"
fi
host=$(hostname)
node=${host,,}
[[ -n ${node} ]] || die "this machine has no hostname"

retry 60 5 "waiting for Node ${node}" timeout 30 microk8s kubectl get node "${node}" >/dev/null
retry 10 5 "labelling Node ${node}" \
  timeout 30 microk8s kubectl label node "${node}" "$1" --overwrite >/dev/null
log "Node ${node} is labelled $1"
