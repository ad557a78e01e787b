#!/usr/bin/env bash
# Stand up a single-node Slurm cluster on this machine, for tests (docs/design.md, Clusters).
#
#   sudo tests/slurm/slurm_up.sh      # as root, non-interactive, idempotent
#   tests/slurm/slurm_down.sh         # stops what this script started
#
# What it does (Debian 12; no init system needed, every daemon is started by hand):
#   1. apt-get installs slurm-wlm slurmdbd mariadb-server munge (skipped when present;
#      package scripts are kept from starting services during the install).
#   2. munge: writes /etc/munge/munge.key (400, munge:munge) if absent, starts munged
#      as user munge unless a working munged is already there.
#   3. MariaDB: its own data directory, socket and port under the state directory
#      (the system's /var/lib/mysql is not touched), a database and user for slurmdbd.
#   4. /etc/slurm/slurmdbd.conf (600) and /etc/slurm/slurm.conf (the default paths, so
#      sinfo/sbatch/sacct and the Snakemake plugin need no SLURM_CONF); starts slurmdbd,
#      registers the cluster, an account and root as its user with sacctmgr.
#   5. Starts slurmctld and slurmd and waits until sinfo shows the node idle.
#
# State, logs and PIDs live in ${MTCXR_SLURM_DIR:-/tmp/mtcxr-slurm}:
#   pids/<daemon>.pid  the daemons this script started (slurm_down.sh stops exactly these)
#   log/               daemon logs      etc/  ctld/  slurmd/  mysql/   state
#
# Knobs (environment):
#   MTCXR_SLURM_DIR          state directory                      (/tmp/mtcxr-slurm)
#   MTCXR_SLURM_CLUSTER      ClusterName                          (mtcxr)
#   MTCXR_SLURM_PARTITION    the one partition, Default=YES       (debug)
#   MTCXR_SLURM_ACCOUNT      account root is added to             (mtcxr)
#   MTCXR_SLURM_GPUS         1: advertise one fake GPU (gres/gpu on /dev/null) so
#                            jobs asking --gpus=1 are scheduled (they see no GPU);
#                            0: no GRES, --gpus requests are rejected            (1)
#   MTCXR_SLURM_MEM_HEADROOM_MB  memory kept back from RealMemory (2048)
#   MTCXR_SLURM_DB_PORT      MariaDB TCP port on 127.0.0.1        (3307)
#   MTCXR_SLURM_TIMEOUT      seconds to wait for each daemon      (120)
#
# /etc/slurm/slurm.conf and slurmdbd.conf are (re)written only when absent or written
# by this script before (first line marker); otherwise the script stops with an error.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

BASE=${MTCXR_SLURM_DIR:-/tmp/mtcxr-slurm}
CLUSTER=${MTCXR_SLURM_CLUSTER:-mtcxr}
PARTITION=${MTCXR_SLURM_PARTITION:-debug}
ACCOUNT=${MTCXR_SLURM_ACCOUNT:-mtcxr}
GPUS=${MTCXR_SLURM_GPUS:-1}
HEADROOM_MB=${MTCXR_SLURM_MEM_HEADROOM_MB:-2048}
DB_PORT=${MTCXR_SLURM_DB_PORT:-3307}
TIMEOUT=${MTCXR_SLURM_TIMEOUT:-120}
CONF_DIR=/etc/slurm
MARKER="# written by mtcxr tests/slurm/slurm_up.sh"
HOST=$(hostname -s)
DB_SOCK=$BASE/mysql/mysqld.sock
DB_NAME=slurm_acct_db
DB_USER=slurm

say() { printf '[slurm_up] %s\n' "$*"; }
die() { printf '[slurm_up] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

# --- helpers -------------------------------------------------------------------------
# pid_alive FILE NAME: FILE holds a pid of a live process whose comm is NAME
pid_alive() {
    local f=$1 name=$2 pid
    [ -s "$f" ] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]
}
# wait_for SECONDS DESCRIPTION CMD...: retry CMD once a second
wait_for() {
    local t=$1 what=$2; shift 2
    local i
    for ((i = 0; i < t; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    die "timed out after ${t}s waiting for $what (logs: $BASE/log)"
}
# record NAME PIDFILE: copy the daemon's own pidfile into pids/ (what slurm_down reads)
record() {
    local name=$1 src=$2 i
    for ((i = 0; i < 30; i++)); do [ -s "$src" ] && break; sleep 1; done
    [ -s "$src" ] || die "$name wrote no pidfile $src"
    tr -dc '0-9' <"$src" >"$BASE/pids/$name.pid"
    say "$name running, pid $(cat "$BASE/pids/$name.pid")"
}
write_conf() {  # write_conf PATH MODE (content on stdin); refuses foreign files
    local path=$1 mode=$2 tmp
    if [ -e "$path" ] && ! head -n1 "$path" | grep -qxF "$MARKER"; then
        die "$path exists and was not written by this script; move it away first"
    fi
    tmp=$(mktemp "$path.XXXXXX")
    { echo "$MARKER"; cat; } >"$tmp"
    chmod "$mode" "$tmp"
    if [ -e "$path" ] && cmp -s "$tmp" "$path"; then rm -f "$tmp"; return 1; fi
    mv -f "$tmp" "$path"
    return 0
}

# --- 1. packages ---------------------------------------------------------------------
PKGS="slurm-wlm slurmdbd mariadb-server munge"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing:$missing"
    # keep the packages' maintainer scripts from starting daemons (there is no init);
    # an existing policy-rc.d is left as it is.
    policy_created=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >"${TMPDIR:-/tmp}/mtcxr-slurm-apt.log" 2>&1 \
        || { tail -n 30 "${TMPDIR:-/tmp}/mtcxr-slurm-apt.log" >&2; die "apt-get install failed"; }
    [ -n "$policy_created" ] && rm -f /usr/sbin/policy-rc.d
else
    say "packages present: $PKGS"
fi

mkdir -p "$BASE"/{pids,log,run,ctld,slurmd,etc}
chmod 755 "$BASE"

# --- 2. munge ------------------------------------------------------------------------
KEY=/etc/munge/munge.key
if [ ! -s "$KEY" ]; then
    say "writing munge key $KEY"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$KEY" --force
    else dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none; fi
fi
chown munge:munge "$KEY"; chmod 400 "$KEY"
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
if pid_alive "$BASE/pids/munged.pid" munged; then
    say "munged already running (started by slurm_up), pid $(cat "$BASE/pids/munged.pid")"
elif munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "a munged not started by slurm_up is working; using it (slurm_down will leave it)"
    rm -f "$BASE/pids/munged.pid"
else
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    wait_for "$TIMEOUT" munged sh -c 'munge -n | unmunge'
    record munged /run/munge/munged.pid
fi

# --- 3. MariaDB ----------------------------------------------------------------------
PASSFILE=$BASE/etc/db.pass
[ -s "$PASSFILE" ] || { (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$PASSFILE"); }
DB_PASS=$(cat "$PASSFILE")
if [ ! -d "$BASE/mysql/mysql" ]; then
    say "initialising MariaDB data directory $BASE/mysql"
    install -d -o mysql -g mysql -m 750 "$BASE/mysql"
    mariadb-install-db --no-defaults --user=mysql --datadir="$BASE/mysql" \
        --auth-root-authentication-method=socket --skip-test-db \
        >"$BASE/log/mariadb-install.log" 2>&1 || { tail -n 20 "$BASE/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
fi
# mariadbd runs as user mysql: its error log is pre-created for it, its pid file is in
# its data directory
touch "$BASE/log/mariadb.log"; chown mysql:mysql "$BASE/log/mariadb.log"
mysql_ping() { mariadb-admin --no-defaults --socket="$DB_SOCK" -uroot ping; }
if pid_alive "$BASE/pids/mariadb.pid" mariadbd; then
    say "mariadbd already running, pid $(cat "$BASE/pids/mariadb.pid")"
else
    rm -f "$BASE/mysql/mariadbd.pid"
    setsid mariadbd --no-defaults --user=mysql --datadir="$BASE/mysql" \
        --socket="$DB_SOCK" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --pid-file="$BASE/mysql/mariadbd.pid" --log-error="$BASE/log/mariadb.log" \
        --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --skip-name-resolve \
        </dev/null >/dev/null 2>&1 &
    wait_for "$TIMEOUT" "mariadbd on $DB_SOCK" mysql_ping
    record mariadb "$BASE/mysql/mariadbd.pid"
fi
mariadb --no-defaults --socket="$DB_SOCK" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
say "MariaDB: database $DB_NAME, user $DB_USER, 127.0.0.1:$DB_PORT"

# --- 4. Slurm configuration ----------------------------------------------------------
mkdir -p "$CONF_DIR"
# slurmd -C prints this machine's real topology (CPUs, sockets, cores, threads, memory);
# declaring the same keeps slurmd from draining the node for a mismatch.
NODE_HW=$(slurmd -C | head -n1)
field() { printf '%s\n' "$NODE_HW" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
CPUS=$(field CPUs); [ -n "$CPUS" ] || CPUS=$(nproc)
TOPO=""
for k in Boards SocketsPerBoard CoresPerSocket ThreadsPerCore; do
    v=$(field $k); [ -n "$v" ] && TOPO="$TOPO $k=$v"
done
TOTAL_MB=$(free -m | awk '/^Mem:/ {print $2}')
MEM_MB=$((TOTAL_MB - HEADROOM_MB))
[ "$MEM_MB" -ge 1024 ] || MEM_MB=$((TOTAL_MB / 2))
GRES_NODE=""; GRES_TYPES=""
case "$GPUS" in 0|1) ;; *) die "MTCXR_SLURM_GPUS must be 0 or 1 (one fake device)";; esac
if [ "$GPUS" -gt 0 ]; then
    GRES_NODE=" Gres=gpu:$GPUS"
    # AccountingStorageTRES: sacct's AllocTRES then shows gres/gpu=N for GPU jobs
    GRES_TYPES=$'GresTypes=gpu\nAccountingStorageTRES=gres/gpu'
fi

changed=""
write_conf "$CONF_DIR/slurmdbd.conf" 600 <<EOF && changed="$changed slurmdbd.conf"
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$BASE/run/slurmdbd.pid
LogFile=$BASE/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF

write_conf "$CONF_DIR/slurm.conf" 644 <<EOF && changed="$changed slurm.conf"
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$BASE/ctld
SlurmdSpoolDir=$BASE/slurmd
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
# keep sbatch --comment (the Snakemake plugin puts rule_<name> there) in sacct
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MinJobAge=300
$GRES_TYPES
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS$TOPO RealMemory=$MEM_MB$GRES_NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

if [ "$GPUS" -gt 0 ]; then
    write_conf "$CONF_DIR/gres.conf" 644 <<EOF && changed="$changed gres.conf"
# a fake GPU for a GPU-less test node: lets --gpus=1 jobs be scheduled. Slurm ignores a
# count-only gpu GRES (the node goes INVAL "gres/gpu count reported lower than
# configured"), so it needs a device file; /dev/null stands in (jobs see no GPU).
NodeName=$HOST Name=gpu File=/dev/null
EOF
elif [ -e "$CONF_DIR/gres.conf" ] && head -n1 "$CONF_DIR/gres.conf" | grep -qxF "$MARKER"; then
    rm -f "$CONF_DIR/gres.conf"; changed="$changed gres.conf(removed)"
fi
[ -n "$changed" ] && say "wrote$changed in $CONF_DIR" || say "configs in $CONF_DIR unchanged"
say "node $HOST: CPUs=$CPUS$TOPO RealMemory=$MEM_MB$GRES_NODE, partition $PARTITION, cluster $CLUSTER"

# a daemon already running with an older config is restarted
restart_if_changed() {  # NAME COMM PATTERN
    local name=$1 comm=$2 pat=$3
    if [ -n "$changed" ] && printf '%s' "$changed" | grep -q "$pat" && pid_alive "$BASE/pids/$name.pid" "$comm"; then
        say "config changed: restarting $name"
        kill "$(cat "$BASE/pids/$name.pid")"
        for _ in $(seq 1 30); do pid_alive "$BASE/pids/$name.pid" "$comm" || break; sleep 1; done
        rm -f "$BASE/pids/$name.pid"
    fi
}
restart_if_changed slurmd slurmd 'slurm.conf\|gres.conf'
restart_if_changed slurmctld slurmctld 'slurm.conf\|gres.conf'
restart_if_changed slurmdbd slurmdbd 'slurmdbd.conf'

# --- slurmdbd, cluster and account -------------------------------------------------
if pid_alive "$BASE/pids/slurmdbd.pid" slurmdbd; then
    say "slurmdbd already running, pid $(cat "$BASE/pids/slurmdbd.pid")"
else
    rm -f "$BASE/run/slurmdbd.pid"
    setsid slurmdbd </dev/null >>"$BASE/log/slurmdbd.stdout" 2>&1
    record slurmdbd "$BASE/run/slurmdbd.pid"
fi
wait_for "$TIMEOUT" "slurmdbd (sacctmgr list cluster)" sacctmgr -n list cluster
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    say "sacctmgr: added cluster $CLUSTER"
fi
if ! sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="mtcxr tests" Organization=mtcxr >/dev/null
    say "sacctmgr: added account $ACCOUNT"
fi
if ! sacctmgr -n -P list assoc user=root account="$ACCOUNT" cluster="$CLUSTER" format=user | grep -qx root; then
    sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
    say "sacctmgr: added user root to account $ACCOUNT"
fi

# --- 5. slurmctld, slurmd ------------------------------------------------------------
if pid_alive "$BASE/pids/slurmctld.pid" slurmctld; then
    say "slurmctld already running, pid $(cat "$BASE/pids/slurmctld.pid")"
else
    rm -f "$BASE/run/slurmctld.pid"
    setsid slurmctld </dev/null >>"$BASE/log/slurmctld.stdout" 2>&1
    record slurmctld "$BASE/run/slurmctld.pid"
fi
wait_for "$TIMEOUT" "slurmctld (scontrol ping)" sh -c 'scontrol ping | grep -q UP'
if pid_alive "$BASE/pids/slurmd.pid" slurmd; then
    say "slurmd already running, pid $(cat "$BASE/pids/slurmd.pid")"
else
    rm -f "$BASE/run/slurmd.pid"
    setsid slurmd </dev/null >>"$BASE/log/slurmd.stdout" 2>&1
    record slurmd "$BASE/run/slurmd.pid"
fi

node_idle() { sinfo -h -n "$HOST" -o '%t' | grep -qE '^(idle|mix|alloc)$'; }
for ((i = 0; i < TIMEOUT; i++)); do
    node_idle && break
    state=$(sinfo -h -n "$HOST" -o '%t' 2>/dev/null || true)
    case "$state" in
        drain*|drng|down*|fail*)
            # a node drained/down from an earlier run (e.g. killed slurmd) is resumed
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
node_idle || { sinfo -N -l >&2 || true; die "node $HOST never became idle (logs: $BASE/log)"; }
sinfo -N -o '%N %P %t %c %m %G'
say "Slurm cluster '$CLUSTER' is up; state in $BASE; stop with tests/slurm/slurm_down.sh"
