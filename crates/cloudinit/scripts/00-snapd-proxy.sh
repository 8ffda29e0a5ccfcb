#!/bin/bash
# Makes snapd download through HTTP(S) proxies.
# Usage: 00-snapd-proxy.sh HTTP_PROXY HTTPS_PROXY   (an empty value leaves that proxy alone)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 2)) || usage "HTTP_PROXY HTTPS_PROXY"

if [[ -n $1 ]]; then
  retry 5 5 "setting snapd's HTTP proxy" snap set system "proxy.http=$1"
  log "snapd uses an HTTP proxy"
fi
if [[ -n $2 ]]; then
  retry 5 5 "setting snapd's HTTPS proxy" snap set system "proxy.https=$2"
  log "snapd uses an HTTPS proxy"
fi
