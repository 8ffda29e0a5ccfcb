#!/bin/bash
# First control plane node: replaces MicroK8s' self-generated CA with the cluster CA that
# cloud-init wrote to /var/tmp/ca.crt and /var/tmp/ca.key, then deletes both files
# (also when the refresh fails: the key must not stay on disk).
# Usage: 30-refresh-certs.sh
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 0)) || usage ""
ca_dir="${CAPI_ROOT}/var/tmp"

capi_cleanup() {
  rm -f "${ca_dir}/ca.crt" "${ca_dir}/ca.key"
}

[[ -e ${ca_dir}/ca.crt && -e ${ca_dir}/ca.key ]] || die "the cluster CA is missing from ${ca_dir#"${CAPI_ROOT}"}"
retry 3 10 "installing the cluster CA" timeout 600 microk8s refresh-certs "${ca_dir}"
capi_cleanup
log "the cluster CA is installed; its files were removed from ${ca_dir#"${CAPI_ROOT}"}"
wait_apiserver
