#!/bin/bash
# Stops and disables a kubelet or containerd the machine image may ship (e.g. images built
# for kubeadm): they would compete with MicroK8s for its ports.
# Usage: 00-disable-host-services.sh
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 0)) || usage ""

for service in kubelet.service containerd.service; do
  if systemctl stop "${service}" >/dev/null 2>&1; then
    log "stopped ${service}"
  fi
  if systemctl disable "${service}" >/dev/null 2>&1; then
    log "disabled ${service}"
  fi
done
