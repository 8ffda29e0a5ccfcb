#!/usr/bin/env bash
# Kills processes left behind by the T1 test harness (crates/testenv) and removes its
# directories. CI runs it before and after the tests; it is safe while other test processes
# run: a session whose test process is still alive is left alone (unless --force).
#
#   hack/sweep-testenv.sh [--force] [--dry-run]
#   hack/sweep-testenv.sh --janitor SESSION_DIR [--keep]   # used by the harness itself
#
# Layout under $TESTENV_RUN_DIR (default /tmp/mk8s-testenv), one directory per test process:
#   s-<pid>-<start>/owner       pid= and start= of the test process
#   s-<pid>-<start>/shm-dir     the session's tmpfs directory (etcd data), one line
#   s-<pid>-<start>/pids/*.pid  pid=, start=, exe=, name= of every child process
# <start> is field 22 of /proc/<pid>/stat (start time in clock ticks after boot): a pid is
# only killed if it still has that start time and runs the recorded binary, so a recycled
# pid is never touched.
#
# --janitor: the harness starts one janitor per test process with stdin on a pipe the test
# process holds. At end of input (the test process is gone, however it ended), the janitor
# kills the session's processes and removes its directories (only kills with --keep).
set -euo pipefail

run_dir=${TESTENV_RUN_DIR:-/tmp/mk8s-testenv}
run_dir=${run_dir%/}
shm_root=/dev/shm/mk8s-testenv
force=0
dry_run=0
keep=0
janitor=

log() { printf 'sweep-testenv: %s\n' "$*" >&2; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --dry-run) dry_run=1 ;;
    --keep) keep=1 ;;
    --janitor)
      [ "$#" -ge 2 ] || { log "--janitor needs a session directory"; exit 2; }
      janitor=$2
      shift
      ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]:-$0}" 2>/dev/null || true; exit 0 ;;
    *) log "unknown argument: $1"; exit 2 ;;
  esac
  shift
done

# field FILE KEY: the value of the first KEY=... line of FILE (empty if none).
field() {
  local line
  while IFS= read -r line; do
    case "$line" in
      "$2="*) printf '%s\n' "${line#"$2"=}"; return 0 ;;
    esac
  done <"$1"
  return 0
}

# start_time PID: field 22 of /proc/PID/stat; empty if PID is gone or a zombie.
start_time() {
  local stat rest
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  rest=${stat##*)}
  local -a f
  read -r -a f <<<"$rest"
  # f[0] is field 3 (state), so field 22 is f[19].
  [ "${f[0]:-}" != Z ] || return 0
  printf '%s\n' "${f[19]:-}"
}

# alive PID START: PID runs and started at START.
alive() {
  [ -n "$1" ] && [ -n "$2" ] && [ "$(start_time "$1")" = "$2" ]
}

run() {
  if [ "$dry_run" = 1 ]; then log "would run: $*"; else "$@"; fi
}

# kill_recorded PIDFILE: SIGKILL the process a pid file names, if it is still that process.
kill_recorded() {
  local file=$1 pid start exe name now _
  pid=$(field "$file" pid)
  start=$(field "$file" start)
  exe=$(field "$file" exe)
  name=$(field "$file" name)
  case "$pid" in ''|*[!0-9]*) return 0 ;; esac
  alive "$pid" "$start" || return 0
  now=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  now=${now% (deleted)}
  if [ -n "$exe" ] && [ "${now##*/}" != "${exe##*/}" ]; then
    log "pid $pid ($name) now runs ${now:-?}, not ${exe##*/}: left alone"
    return 0
  fi
  if [ "$dry_run" = 1 ]; then
    log "would kill leftover $name (pid $pid)"
    return 0
  fi
  log "killing leftover $name (pid $pid)"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    alive "$pid" "$start" || return 0
    sleep 0.05
  done
  log "pid $pid ($name) did not die"
}

# safe_rm DIR: rm -rf, but only below the run dir or the tmpfs root.
safe_rm() {
  local d=$1
  [ -n "$d" ] && [ -e "$d" ] || return 0
  case "$d" in
    "$run_dir"/s-*|"$shm_root"/s-*|*/s-[0-9]*-[0-9]*/data) run rm -rf -- "$d" ;;
    *) log "not removing $d (outside $run_dir and $shm_root)" ;;
  esac
}

# sweep_session DIR: kill its processes, then (unless --keep) remove its directories.
sweep_session() {
  local dir=$1 f shm=
  if [ -d "$dir/pids" ]; then
    for f in "$dir"/pids/*.pid; do
      [ -f "$f" ] || continue
      kill_recorded "$f"
    done
  fi
  [ "$keep" = 0 ] || return 0
  if [ -f "$dir/shm-dir" ]; then
    IFS= read -r shm <"$dir/shm-dir" || true
  fi
  safe_rm "$shm"
  safe_rm "$dir"
}

# owner_alive NAME: the test process a session is named after (s-<pid>-<start>) still runs.
owner_alive() {
  local name=$1 pid start
  name=${name#s-}
  pid=${name%%-*}
  start=${name#*-}
  alive "$pid" "$start"
}

if [ -n "$janitor" ]; then
  trap '' INT HUP
  cat >/dev/null || true
  sweep_session "$janitor"
  exit 0
fi

swept=0
if [ -d "$run_dir" ]; then
  for d in "$run_dir"/s-*; do
    [ -d "$d" ] || continue
    if [ "$force" = 0 ] && owner_alive "${d##*/}"; then
      log "${d##*/}: its test process is still running; left alone (use --force)"
      continue
    fi
    sweep_session "$d"
    swept=$((swept + 1))
  done
fi
# tmpfs directories whose session directory is gone (or lives under another run dir).
if [ -d "$shm_root" ]; then
  for d in "$shm_root"/s-*; do
    [ -d "$d" ] || continue
    if [ "$force" = 0 ] && owner_alive "${d##*/}"; then continue; fi
    [ -d "$run_dir/${d##*/}" ] && continue
    safe_rm "$d"
  done
fi
log "swept $swept stale session(s) under $run_dir"
