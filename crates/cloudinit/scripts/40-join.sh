#!/bin/bash
# Joins the cluster through the first cluster agent that accepts, trying every URL in
# turn, round after round, 5 seconds apart, for up to 20 minutes (240 rounds at most). A
# worker's data may be rendered while the machine it joins through is still initializing
# the cluster, so its first attempts fail until that machine has registered the join token.
# Usage: 40-join.sh [--worker] HOST:PORT/TOKEN...
#   --worker  join as a worker node; without it the node becomes a control plane member
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

worker=() as_worker=false
if [[ ${1:-} == --worker ]]; then
  worker=(--worker) as_worker=true
  shift
fi
(($# > 0)) || usage "[--worker] HOST:PORT/TOKEN..."

rounds=240 deadline=$((SECONDS + 1200))
joined=""
for ((round = 1; round <= rounds; round++)); do
  for url in "$@"; do
    # Only the address is logged: the rest of the URL is the join token.
    log "joining through ${url%%/*} (round ${round} of at most ${rounds})"
    if timeout 600 microk8s join "${url}" "${worker[@]}"; then
      joined=${url%%/*}
      break 2
    fi
  done
  if ((round == rounds || SECONDS >= deadline)); then
    break
  fi
  sleep 5
done
[[ -n ${joined} ]] || die "could not join the cluster through any of the $# control plane addresses"
log "joined the cluster through ${joined}"

run_configure_hook
restart_service daemon-containerd
restart_service daemon-kubelite
if [[ ${as_worker} != true ]]; then
  wait_apiserver
fi
