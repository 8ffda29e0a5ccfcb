#!/bin/bash
# Joins the cluster through the first cluster agent that accepts, trying every URL in
# turn, round after round, 5 seconds apart: a control plane node for up to 20 minutes (240
# rounds at most), a worker for up to 60 minutes (720 rounds). A worker's data may be
# rendered while the machine it joins through is still initializing the cluster (installing
# MicroK8s, possibly through a slow snap store proxy), so its first attempts fail until that
# machine has registered the join token; control plane nodes join initialized clusters only.
# Usage: 40-join.sh [--worker] HOST:PORT/TOKEN...
#   --worker  join as a worker node; without it the node becomes a control plane member
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

worker=() as_worker=false rounds=240 window=1200
if [[ ${1:-} == --worker ]]; then
  worker=(--worker) as_worker=true rounds=720 window=3600
  shift
fi
(($# > 0)) || usage "[--worker] HOST:PORT/TOKEN..."

deadline=$((SECONDS + window))
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
