#!/bin/bash
# Switches Calico from VXLAN to IP-in-IP encapsulation.
# Usage: 30-calico-ipip.sh
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 0)) || usage ""
cni="${SNAP_ARGS}/cni-network/cni.yaml"
if [[ ! -e ${cni} ]]; then
  log "no Calico manifest (the default CNI is disabled); nothing to switch"
  exit 0
fi

wait_apiserver
retry 10 5 "deleting the calico-node DaemonSet" \
  timeout 120 microk8s kubectl delete daemonset/calico-node -n kube-system --ignore-not-found
if ! timeout 120 microk8s kubectl delete ippools --all >/dev/null 2>&1; then
  log "no Calico IP pools to delete"
fi
sed -i \
  -e 's/CALICO_IPV4POOL_VXLAN/CALICO_IPV4POOL_IPIP/' \
  -e 's/calico_backend: "vxlan"/calico_backend: "bird"/' \
  -e 's/-felix-ready/-bird-ready/' \
  -e 's/-felix-live/-bird-live/' \
  "${cni}"
retry 10 5 "applying the IP-in-IP Calico manifest" timeout 300 microk8s kubectl apply -f "${cni}"
log "Calico uses IP-in-IP"
