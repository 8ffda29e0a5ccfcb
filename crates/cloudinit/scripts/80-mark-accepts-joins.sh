#!/bin/bash
# First control plane node, once the join token is registered: labels this node's Node object
# to tell the management cluster that joins can succeed. The Node's name is the kubelet's
# --hostname-override when its arguments set one (the last one wins, as with the kubelet),
# else the host name, in lower case.
# Usage: 80-mark-accepts-joins.sh KEY=VALUE
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# != 1)) || [[ $1 != ?*=* ]]; then
  usage "KEY=VALUE"
fi
node=""
args_file="${SNAP_ARGS}/kubelet"
if [[ -r ${args_file} ]]; then
  node=$(sed -n -E "s/^--hostname-override[= ]+[\"']?([^\"' ]*)[\"']?[[:space:]]*$/\\1/p" "${args_file}" | tail -n 1)
fi
if [[ -z ${node} ]]; then
  node=$(hostname)
fi
node=${node,,}
[[ -n ${node} ]] || die "this machine has no hostname"

retry 60 5 "waiting for Node ${node}" timeout 30 microk8s kubectl get node "${node}" >/dev/null
retry 10 5 "labelling Node ${node}" \
  timeout 30 microk8s kubectl label node "${node}" "$1" --overwrite >/dev/null
log "Node ${node} is labelled $1"
