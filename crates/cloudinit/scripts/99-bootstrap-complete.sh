#!/bin/sh
# Last Cluster API entry of runcmd. It is SOURCED by runcmd's own /bin/sh script
# (runcmd entry [".", "/capi-scripts/99-bootstrap-complete.sh"]), not executed, so that it
# can end runcmd: if a bootstrap step failed it exits runcmd with status 1 (the
# postRunCommands after it do not run and cloud-init reports the failure); otherwise it
# writes Cluster API's bootstrap success sentinel. POSIX sh: runcmd runs under dash.
if [ -e "${CAPI_ROOT:-}/run/capi-microk8s/failed-step" ]; then
  echo "capi: bootstrap FAILED: $(cat "${CAPI_ROOT:-}/run/capi-microk8s/failed-step")" >&2
  echo "capi: the remaining runcmd entries (postRunCommands) are not run; see the messages above" >&2
  exit 1
fi
if ! { mkdir -p "${CAPI_ROOT:-}/run/cluster-api" &&
  echo success >"${CAPI_ROOT:-}/run/cluster-api/bootstrap-success.complete"; }; then
  echo "capi: could not write the bootstrap success sentinel" >&2
  exit 1
fi
echo "capi: bootstrap complete" >&2
