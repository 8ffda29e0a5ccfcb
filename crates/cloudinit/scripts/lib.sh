# shellcheck shell=bash
# Helpers shared by the MicroK8s Cluster API bootstrap steps in /capi-scripts.
#
# Every step script runs `set -euo pipefail` and then sources this file. It is not a step
# and is never run on its own.
#
# Fail-stop: cloud-init runs runcmd as one /bin/sh script without `set -e`, so a failing
# step would not stop the next one. Instead, a step that fails records its name in
# $CAPI_FAILED_MARKER, and every later step refuses to run while that marker exists. The
# last entry of runcmd (99-bootstrap-complete.sh, sourced by runcmd's own shell) then ends
# runcmd with an error instead of writing Cluster API's success sentinel.
#
# CAPI_ROOT: prefix of every absolute path the steps read or write. Unset on real nodes
# (nothing sets it there); tests point it at a scratch directory. Commands come from PATH.

CAPI_ROOT=${CAPI_ROOT:-}
CAPI_STEP=${0##*/}
CAPI_FAILED_MARKER="${CAPI_ROOT}/run/capi-microk8s/failed-step"
SNAP_CURRENT="${CAPI_ROOT}/var/snap/microk8s/current"
# shellcheck disable=SC2034 # used by the step scripts
SNAP_ARGS="${SNAP_CURRENT}/args"

log() {
  printf 'capi: %s: %s\n' "${CAPI_STEP}" "$*" >&2
}

err() {
  printf 'capi: %s: ERROR: %s\n' "${CAPI_STEP}" "$*" >&2
}

die() {
  err "$*"
  exit 1
}

# usage SYNOPSIS: reports a wrong command line (an empty SYNOPSIS: no arguments expected).
usage() {
  if [[ -z ${1:-} ]]; then
    die "this step takes no arguments"
  fi
  die "usage: ${CAPI_STEP} $*"
}

# retry ATTEMPTS DELAY WHAT COMMAND [ARG...]
# Runs COMMAND until it succeeds, at most ATTEMPTS times, DELAY seconds apart; if every
# attempt fails, the step fails. WHAT names the action in messages (the command line itself
# may carry secrets and is never printed).
retry() {
  local attempts=$1 delay=$2 what=$3 n=1
  shift 3
  until "$@"; do
    if ((n >= attempts)); then
      die "${what}: failed ${attempts} times, giving up"
    fi
    log "${what}: attempt ${n} of ${attempts} failed, retrying in ${delay}s"
    sleep "${delay}"
    n=$((n + 1))
  done
}

# wait_apiserver: waits (about 10 minutes at most) until the local API server is ready.
wait_apiserver() {
  retry 120 5 "waiting for the local API server" \
    timeout 30 microk8s kubectl get --raw /readyz >/dev/null
  log "the local API server is ready"
}

# restart_service NAME: restarts the MicroK8s service microk8s.NAME.
restart_service() {
  retry 10 5 "restarting microk8s.$1" timeout 300 snap restart "microk8s.$1"
}

# run_configure_hook: makes snapd run MicroK8s' configure hook, which regenerates
# certificates and sanitises arguments. The value only has to differ from the last one.
run_configure_hook() {
  retry 10 5 "running the MicroK8s configure hook" \
    timeout 300 snap set microk8s "hack.update.csr=capi-$$-${RANDOM}"
}

# shell_quote VALUE: prints VALUE as one single-quoted shell word.
shell_quote() {
  local q="'\\''"
  printf "'%s'" "${1//\'/${q}}"
}

# is_port VALUE: whether VALUE is a TCP port number.
is_port() {
  [[ $1 =~ ^[0-9]{1,5}$ ]] && (($1 >= 1 && $1 <= 65535))
}

capi_on_exit() {
  local status=$?
  if declare -F capi_cleanup >/dev/null; then
    capi_cleanup || true
  fi
  if ((status != 0)); then
    if [[ ! -e ${CAPI_FAILED_MARKER} ]]; then
      mkdir -p "${CAPI_FAILED_MARKER%/*}"
      printf '%s exited with status %d\n' "${CAPI_STEP}" "${status}" >"${CAPI_FAILED_MARKER}" || true
    fi
    err "this step failed (exit status ${status}); the remaining bootstrap steps will not run"
  fi
}

capi_on_error() {
  local status=$? line=$1 command=$2
  err "line ${line}: \`${command}\` failed with status ${status}"
}

if [[ -e ${CAPI_FAILED_MARKER} ]]; then
  err "not running: an earlier bootstrap step failed ($(<"${CAPI_FAILED_MARKER}"))"
  exit 1
fi

trap 'capi_on_error "${LINENO}" "${BASH_COMMAND}"' ERR
trap capi_on_exit EXIT
log "starting"
