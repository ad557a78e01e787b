#!/usr/bin/env bash
# Stop the single-node Slurm that tests/slurm/slurm_up.sh started: exactly the daemons
# whose PIDs it recorded in ${MTCXR_SLURM_DIR:-/tmp/mtcxr-slurm}/pids (slurmd, slurmctld,
# slurmdbd, mariadb, munged), in that order. A daemon slurm_up found already running
# and did not start has no pid file there and is left alone.
#
#   tests/slurm/slurm_down.sh           # stop; keep state (job history, database)
#   tests/slurm/slurm_down.sh --purge   # stop, then delete the state directory
#
# Idempotent: stale or missing pid files are skipped. Exit status 1 if a daemon
# survived SIGTERM + SIGKILL.
set -uo pipefail

BASE=${MTCXR_SLURM_DIR:-/tmp/mtcxr-slurm}
TIMEOUT=${MTCXR_SLURM_TIMEOUT:-60}
say() { printf '[slurm_down] %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { say "must run as root" >&2; exit 1; }
rc=0

stop() {  # stop NAME COMM
    local name=$1 comm=$2 f=$BASE/pids/$1.pid pid i
    if [ ! -s "$f" ]; then say "$name: not started by slurm_up (no $f)"; return; fi
    pid=$(tr -dc '0-9' <"$f")
    if [ -z "$pid" ] || [ ! -r "/proc/$pid/comm" ] || [ "$(cat "/proc/$pid/comm")" != "$comm" ]; then
        say "$name: pid ${pid:-?} is not running (stale pid file removed)"
        rm -f "$f"; return
    fi
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < TIMEOUT * 5; i++)); do
        [ -d "/proc/$pid" ] || break
        sleep 0.2
    done
    if [ -d "/proc/$pid" ]; then
        say "$name: pid $pid ignored SIGTERM for ${TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 1
    fi
    if [ -d "/proc/$pid" ]; then
        say "$name: pid $pid is STILL running" >&2; rc=1
    else
        say "$name: stopped (pid $pid)"; rm -f "$f"
    fi
}

# children first: slurmd (compute), slurmctld, slurmdbd (needs the DB), the DB, munge
stop slurmd slurmd
stop slurmctld slurmctld
stop slurmdbd slurmdbd
stop mariadb mariadbd
stop munged munged

if [ "${1:-}" = "--purge" ]; then
    if [ $rc = 0 ]; then rm -rf "$BASE"; say "removed $BASE"
    else say "not purging $BASE: a daemon is still running" >&2; fi
fi
exit $rc
