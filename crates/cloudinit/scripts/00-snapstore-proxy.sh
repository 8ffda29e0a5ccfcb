#!/bin/bash
# Makes snapd install snaps from a snap store proxy instead of the public store.
# Usage: 00-snapstore-proxy.sh SCHEME DOMAIN STORE_ID   (SCHEME: http or https)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if (($# != 3)) || [[ -z $1 || -z $2 || -z $3 ]]; then
  usage "SCHEME DOMAIN STORE_ID"
fi
scheme=$1 domain=$2 store_id=$3
[[ $scheme == http || $scheme == https ]] || die "unsupported snap store proxy scheme '${scheme}'"
command -v curl >/dev/null || die "curl is needed to fetch the snap store proxy's assertions"

import_assertions() {
  curl -fsSL --max-time 60 "${scheme}://${domain}/v2/auth/store/assertions" | snap ack /dev/stdin
}

retry 10 10 "importing the assertions of ${scheme}://${domain}" import_assertions
retry 5 5 "selecting the snap store proxy" snap set core "proxy.store=${store_id}"
retry 5 5 "restarting snapd" systemctl restart snapd
log "snapd uses the snap store proxy ${scheme}://${domain}"
