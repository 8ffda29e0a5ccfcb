#!/bin/bash
# Control plane: registers the cluster's join token with this node's cluster agent so that
# other nodes can join through this node.
# Usage: 60-add-node.sh TOKEN TTL_SECONDS
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# != 2)) || [[ -z $1 || ! $2 =~ ^[1-9][0-9]*$ ]]; then
  usage "TOKEN TTL_SECONDS"
fi

# add-node prints join commands that contain the token: keep them out of the logs.
retry 10 10 "registering the join token" \
  timeout 120 microk8s add-node --token "$1" --token-ttl "$2" >/dev/null
log "the join token is registered (valid for $2 seconds)"
