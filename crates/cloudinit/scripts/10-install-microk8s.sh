#!/bin/bash
# Installs the MicroK8s snap (unless the image already has it), optionally holds its
# automatic refreshes and disables the default CNI (Calico).
# Usage: 10-install-microk8s.sh --channel CHANNEL [--classic] [--refresh-hold HOLD] [--disable-cni]
#   CHANNEL  snap channel, e.g. 1.33/stable or 1.33-strict/stable
#   HOLD     forever, or a duration such as 720h (snap refresh --hold)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

synopsis="--channel CHANNEL [--classic] [--refresh-hold HOLD] [--disable-cni]"
channel="" hold="" disable_cni=false
classic=()
while (($# > 0)); do
  case $1 in
    --channel)
      (($# >= 2)) || usage "${synopsis}"
      channel=$2
      shift 2
      ;;
    --refresh-hold)
      (($# >= 2)) || usage "${synopsis}"
      hold=$2
      shift 2
      ;;
    --classic)
      classic=(--classic)
      shift
      ;;
    --disable-cni)
      disable_cni=true
      shift
      ;;
    *) usage "${synopsis}" ;;
  esac
done
[[ -n ${channel} ]] || usage "${synopsis}"

# One attempt. An attempt that timed out leaves snapd installing on its own (another install
# would fail with "change in progress"): wait for that change first, and count it if it
# succeeded.
install_once() {
  timeout 1200 snap watch --last=install >/dev/null 2>&1 || true
  snap list microk8s >/dev/null 2>&1 && return 0
  timeout 1200 snap install microk8s "--channel=${channel}" "${classic[@]}"
}

if snap list microk8s >/dev/null 2>&1; then
  log "MicroK8s is already installed (preinstalled image); not installing channel ${channel}"
else
  retry 5 15 "installing MicroK8s from channel ${channel}" install_once
  log "installed MicroK8s from channel ${channel}"
fi

if [[ -n ${hold} ]]; then
  retry 5 5 "holding automatic refreshes of MicroK8s" snap refresh "--hold=${hold}" microk8s
  log "automatic refreshes of MicroK8s are held (${hold})"
fi

if [[ ${disable_cni} == true ]]; then
  cni="${SNAP_ARGS}/cni-network/cni.yaml"
  if [[ -e ${cni} ]]; then
    mv "${cni}" "${cni}.disabled"
    log "default CNI disabled (moved ${cni#"${CAPI_ROOT}"} away)"
  else
    log "default CNI already disabled (no ${cni#"${CAPI_ROOT}"})"
  fi
fi
