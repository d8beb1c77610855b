#!/usr/bin/env bash
# End-to-end test of the SLURM launcher on a throwaway single-node SLURM cluster (make test-slurm).
#
#   scripts/slurm/test_slurm.sh [--train] [--no-dummy] [--sbatch PATH] [--keep] [--timeout SEC]
#                               [--signal-after SEC] [-- TRAINING_OVERRIDES...]
#
# What it does, all as the current (root) user and without systemd:
#   1. installs Debian's slurm-wlm and munge with apt-get if slurmctld (or munged) is missing;
#   2. starts munged, slurmctld and slurmd as background processes of this script, every file they use
#      (munge key and socket, slurm.conf, state save location, spool, pid and log files) in one temp dir;
#   3. smoke test: a 2-task `srun hostname`;
#   4. requeue test with a dummy job (default): a 2-task batch job whose tasks "train" for a few seconds;
#      mid-run this script sends the job SIGUSR1 (`scancel --signal=USR1`, which reaches the srun tasks, not the
#      batch shell), rank 0 saves its step and runs `scontrol requeue $SLURM_JOB_ID`, the requeued job sees
#      SLURM_RESTART_COUNT=1, resumes from the saved step and finishes;
#   5. with --train, the same with the real launcher: scripts/slurm/train.sbatch (or --sbatch PATH) as a
#      2-task CPU job running a tiny DDP training (the defaults below, or the overrides given after --); the
#      signal is sent once the run has written its first checkpoint;
#   6. checks each job: state COMPLETED with exit 0:0 and Restarts >= 1 (from `scontrol show job`: there is no
#      slurmdbd, so no sacct), metrics.json in the run directory with step == max_steps, SLURM's requeue line in
#      the job's console log, and for training a requeue message in the run's log, a resume from a checkpoint
#      and exactly one W&B run id under the run directory; prints PASS/FAIL per check, exits 1 on any FAIL;
#   7. on exit (trap), cancels its jobs, stops the three daemons and any job step they left, and deletes the
#      temp dir (kept with --keep or on failure, for its logs).
#
# Requeue timing: SLURM holds a requeued batch job PENDING (Reason=BeginTime) until now + cred_expire + 1 s
# (slurm.conf AuthInfo=cred_expire, default 120 s, smallest accepted 5 s), and then starts it at the next
# pass of the main scheduler (SchedulerParameters=sched_interval, default 60 s). Here cred_expire=5 and
# sched_interval=1, so a requeued job restarts about 6-7 s after the requeue (about 160 s with the defaults).
#
# Environment: SLURM_TEST_CTLD_PORT / SLURM_TEST_SLURMD_PORT (default 16817 / 16818, away from a real
# SLURM's 6817 / 6818), WANDB_MODE (default offline), PYTHON (for the dummy job and the checks; python3).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python3}
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-16817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-16818}
export WANDB_MODE=${WANDB_MODE:-offline}

# --- options -------------------------------------------------------------------------------------------------
RUN_DUMMY=1
RUN_TRAIN=0
KEEP=0
SBATCH_FILE=scripts/slurm/train.sbatch
JOB_TIMEOUT=600      # seconds one job may take, requeue included, before it is cancelled and fails the test
SIGNAL_AFTER=""      # empty: signal when the run's first checkpoint appears; N: N s after the job starts
REQUEUE_TIMEOUT=120  # seconds from SIGUSR1 to the requeue: train.sbatch's --signal=SIGUSR1@120 margin
NTASKS=2
# The tiny training run, appended to the sbatch file's own overrides (Hydra: the last value of a key or group
# wins, so trainer=ddp_cpu replaces its trainer=ddp). The last four undo what its experiment=santacoder_1b
# sets and a tiny CPU run does not want: a 49152-token BPE (1.5 s a step on 2 cores instead of ~0.3 s), 100
# validation batches, a log line every 50 steps, 4 loader workers per rank. max_steps is read back for the
# metrics.json check.
TRAIN_ARGS=(model=tiny trainer=ddp_cpu trainer.max_steps=60 data.batch_size=8 data.seq_len=128
            trainer.val_check_interval=20 "logger=[csv,wandb]"
            data.vocab_size=4096 trainer.limit_val_batches=5 trainer.log_every_n_steps=10 data.num_workers=1)

usage() { sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --train) RUN_TRAIN=1 ;;
        --no-dummy) RUN_DUMMY=0 ;;
        --sbatch) SBATCH_FILE=$2; shift ;;
        --keep) KEEP=1 ;;
        --timeout) JOB_TIMEOUT=$2; shift ;;
        --signal-after) SIGNAL_AFTER=$2; shift ;;
        -h | --help) usage 0 ;;
        --) shift; [[ $# -gt 0 ]] && TRAIN_ARGS=("$@"); break ;;
        *) echo "unknown option: $1" >&2; usage 2 ;;
    esac
    shift
done
if ((RUN_DUMMY == 0 && RUN_TRAIN == 0)); then echo "nothing to do: --no-dummy without --train" >&2; exit 2; fi

T0=$(date +%s)
say() { printf '[test-slurm %4ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() { say "ERROR: $*"; exit 1; }
set -E   # so that this ERR trap also reports a failing command inside a function
trap 'say "ERROR: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)"' ERR

# --- 1. packages ---------------------------------------------------------------------------------------------
# slurmd must run as root (it starts job steps as the submitting user); the apt install needs it too.
[[ $(id -u) -eq 0 ]] || die "run as root (sudo make test-slurm): slurmd and the apt install need it"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    # On a host with systemd the packages' postinst scripts start munge.service (and try slurmd/slurmctld,
    # which fail without /etc/slurm/slurm.conf); the daemons here use their own socket, ports and files.
    command -v apt-get >/dev/null || die "slurmctld/munged missing and no apt-get: install SLURM and munge"
    say "slurmctld or munged not found: apt-get install slurm-wlm munge (Debian's packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurm-wlm munge
fi
for cmd in munged munge unmunge slurmctld slurmd sbatch srun scontrol scancel squeue "$PYTHON"; do
    command -v "$cmd" >/dev/null || die "$cmd not found"
done

# A SLURM job or a user's shell may carry SLURM_*/SBATCH_*/SRUN_* variables that would steer our clients
# (e.g. SBATCH_PARTITION, or a SLURM_JOB_ID that the training code would take for its own): drop them.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(SLURM|SBATCH|SRUN|SALLOC)_' || true)

# --- 2. daemons ----------------------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/santacoder-slurm.XXXXXX")
chmod 755 "$TMP"   # munged wants every directory above its socket searchable by all
mkdir -p "$TMP"/{munge-key,munge-run,state,spool,log,jobs,runs}
chmod 700 "$TMP/munge-key"
export SLURM_CONF=$TMP/slurm.conf   # every SLURM client (sbatch, srun, scontrol in the job) reads this
# Jobs inherit this environment (sbatch exports it), so W&B's caches go to the temp dir as well.
export WANDB_CACHE_DIR=${WANDB_CACHE_DIR:-$TMP/wandb-cache} WANDB_DATA_DIR=${WANDB_DATA_DIR:-$TMP/wandb-data}
PIDS=()        # daemons started here, in start order
JOBS=()        # jobs submitted here
FAILED=0
RESULTS=()     # "PASS|FAIL  check" lines for the summary

stop_pid() {   # stop_pid PID: SIGTERM, up to 10 s, then SIGKILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i pid
    trap - EXIT INT TERM
    set +e
    say "teardown"
    # Cancel what is left of our jobs while slurmctld and slurmd still run, and let their steps end.
    if ((${#JOBS[@]})) && [[ -n "$(squeue -h -o %i 2>/dev/null)" ]]; then
        scancel "${JOBS[@]}" 2>/dev/null
        for i in $(seq 1 40); do [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break; sleep 0.5; done
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    # slurmstepd daemonizes out of slurmd: stop any of ours (they carry our SLURM_CONF) that outlived it.
    for pid in $(pgrep -x slurmstepd 2>/dev/null); do
        if tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qx "SLURM_CONF=$SLURM_CONF"; then
            say "stopping leftover slurmstepd $pid"; stop_pid "$pid"
        fi
    done
    # keep the logs of a failed test (not of one stopped by Ctrl-C or kill: exit 130 / 143)
    if ((rc != 0 && rc != 130 && rc != 143 || FAILED)) && ((KEEP == 0)); then KEEP=1; say "keeping $TMP for its logs"; fi
    if ((KEEP)); then say "temp dir kept: $TMP (logs in $TMP/log, job consoles in $TMP/jobs)"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() { local f; for f in "$@"; do [[ -f $f ]] && { echo "---- $f (tail)"; tail -n 25 "$f"; }; done; }

# munged: its own key (1 KiB of random bytes, mode 0400), socket, pid, seed and log files; -F keeps it in the
# foreground (a child of this script), -f lets it start despite ownership/permission complaints about /tmp.
say "starting munged"
head -c 1024 /dev/urandom >"$TMP/munge-key/munge.key"
chmod 400 "$TMP/munge-key/munge.key"
MUNGE_SOCKET=$TMP/munge-run/munge.socket
munged -F -f --socket="$MUNGE_SOCKET" --key-file="$TMP/munge-key/munge.key" \
    --pid-file="$TMP/munge-run/munged.pid" --seed-file="$TMP/munge-run/munged.seed" \
    --log-file="$TMP/log/munged.log" </dev/null >"$TMP/log/munged.console" 2>&1 &
PIDS+=($!)
for i in $(seq 1 40); do
    munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1 && break
    ((i == 40)) && { show_logs "$TMP/log/munged.console"; die "munged did not come up"; }
    sleep 0.25
done

# The node as slurmd sees it: `slurmd -C` prints NodeName=<short hostname> CPUs=... RealMemory=...; slurmd
# refuses (drains) a node configured with more CPUs or memory than it detects, so use its own line.
NODE_LINE=$(slurmd -C | head -n 1)
NODE=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$NODE_LINE")
CPUS=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
[[ -n $NODE && -n $CPUS ]] || die "cannot parse \`slurmd -C\`: $NODE_LINE"
EXTRA_CONF=""
if ((CPUS < NTASKS)); then   # fewer cores than tasks: declare NTASKS CPUs and tell slurmd to believe it
    say "only $CPUS CPU(s): configuring $NTASKS with SlurmdParameters=config_overrides"
    NODE_LINE=$(sed "s/ CPUs=[0-9]*/ CPUs=$NTASKS/; s/ CoresPerSocket=[0-9]*/ CoresPerSocket=$NTASKS/" <<<"$NODE_LINE")
    EXTRA_CONF="SlurmdParameters=config_overrides"
fi
# A unique first job id: the training run directory is logs/<task>/runs/slurm-<job id> in the repository, and
# a fresh controller would otherwise number from 1 and meet (and resume from) an earlier test's directory.
FIRST_JOB_ID=$(($(date +%s) % 60000000 + 1000000))

mkdir -p "$TMP/spool/slurmd-$NODE"
: >"$TMP/plugstack.conf"
cat >"$SLURM_CONF" <<EOF
# Single-node test cluster written by scripts/slurm/test_slurm.sh; lives only as long as the test.
ClusterName=santacoder-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
# munge for user authentication and job credentials, through our own munged's socket. cred_expire is also
# how long a requeued job waits before it may start again (default 120 s; 5 is the smallest accepted).
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=5
StateSaveLocation=$TMP/state
SlurmdSpoolDir=$TMP/spool/slurmd-%n
SlurmctldPidFile=$TMP/slurmctld.pid
SlurmdPidFile=$TMP/slurmd-%n.pid
SlurmctldLogFile=$TMP/log/slurmctld.log
SlurmdLogFile=$TMP/log/slurmd.log
MailProg=/bin/true
# an empty SPANK plugin list: not the host's /etc/slurm/plugstack.conf
PlugStackConfig=$TMP/plugstack.conf
# No cgroups (containers often lack a writable cgroup tree): track processes by parent pid, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# FIFO scheduling, main loop every second (default 60 s: a requeued job would wait up to a minute more).
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# Jobs are not requeueable unless they ask (sbatch --requeue): so the test proves that the sbatch file does.
# (scontrol requeue of a job without it: "Requested operation is presently disabled".)
JobRequeue=0
# Keep finished jobs in slurmctld's memory (no slurmdbd, so scontrol is the only record): 1 hour.
MinJobAge=3600
FirstJobId=$FIRST_JOB_ID
$EXTRA_CONF
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

say "starting slurmctld (port $CTLD_PORT) and slurmd (port $SLURMD_PORT) for node $NODE: ${NODE_LINE#NodeName=* }"
slurmctld -D -f "$SLURM_CONF" </dev/null >"$TMP/log/slurmctld.console" 2>&1 &
PIDS+=($!)
slurmd -D -f "$SLURM_CONF" </dev/null >"$TMP/log/slurmd.console" 2>&1 &
PIDS+=($!)
for i in $(seq 1 60); do
    state=$(scontrol show node "$NODE" 2>/dev/null | sed -n 's/.*State=\([^ ]*\).*/\1/p' | head -n 1)
    [[ $state == IDLE* ]] && break
    if ((i == 60)); then
        show_logs "$TMP/log/slurmctld.log" "$TMP/log/slurmd.log" "$TMP/log/slurmctld.console" "$TMP/log/slurmd.console"
        die "node $NODE not IDLE after 30 s (state: ${state:-no answer from slurmctld})"
    fi
    sleep 0.5
done
say "cluster up in $(($(date +%s) - T0)) s: node $NODE IDLE"

# --- 3. smoke test -------------------------------------------------------------------------------------------
record() {   # record PASS|FAIL message
    RESULTS+=("$1  $2")
    [[ $1 == PASS ]] || FAILED=1
    say "$1: $2"
}
out=$(timeout 60 srun --nodes=1 --ntasks=$NTASKS --gpus-per-node=0 hostname 2>&1) || true
if [[ $(grep -cx "$NODE" <<<"$out") -eq $NTASKS ]]; then
    record PASS "srun: $NTASKS tasks ran hostname"
else
    record FAIL "srun hostname: $out"; show_logs "$TMP/log/slurmd.log"; exit 1
fi

# --- the job runner --------------------------------------------------------------------------------------------
job_field() { scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }

# run_job LABEL RUN_GLOB SCRIPT [SBATCH_FLAGS...] -- [SCRIPT_ARGS...]
# Submits SCRIPT held, checks that no run directory RUN_GLOB (with JOBID for the id) exists yet, releases it,
# sends SIGUSR1 once the run wrote its first checkpoint (or SIGNAL_AFTER s after it started), follows the job
# through the requeue to its end and records the timings. Sets JOB, RUN_DIR and JOB_OUT.
run_job() {
    local label=$1 run_glob=$2 script=$3; shift 3
    local flags=() args=()
    while [[ $# -gt 0 && $1 != -- ]]; do flags+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    args=("$@")
    # The flags override the file's #SBATCH lines: one node, NTASKS CPU tasks, no GPUs. The console log goes
    # to the temp dir and is appended to (sbatch truncates it when the requeued job starts again, which would
    # lose the first run's output). --hold: submitted, checked, then released.
    JOB=$(sbatch --parsable --hold --nodes=1 --ntasks-per-node=$NTASKS --gpus-per-node=0 --cpus-per-task=1 \
        --time=30 --open-mode=append --output="$TMP/jobs/slurm-%x-%j.out" ${flags[@]+"${flags[@]}"} \
        "$script" "${args[@]}")
    JOB=${JOB%%;*}
    JOBS+=("$JOB")
    JOB_OUT=$(scontrol show job -o "$JOB" | tr ' ' '\n' | sed -n 's/^StdOut=//p')
    local glob=${run_glob//JOBID/$JOB}
    if compgen -G "$glob" >/dev/null; then die "$label: run directory $glob exists already (an earlier test?)"; fi
    scontrol release "$JOB"
    say "$label: job $JOB submitted ($script ${args[*]})"

    local start=$(date +%s) t state reason restarts last="" signalled=0 t_run0="" t_sig="" t_requeue="" t_run1=""
    RUN_DIR=""
    while :; do
        t=$(date +%s)
        state=$(job_field "$JOB" JobState); reason=$(job_field "$JOB" Reason); restarts=$(job_field "$JOB" Restarts); restarts=${restarts:-0}
        [[ -z $RUN_DIR ]] && RUN_DIR=$(compgen -G "$glob" | head -n 1 || true)
        if [[ "$state $reason $restarts" != "$last" ]]; then
            say "$label: job $JOB $state (Reason=$reason Restarts=$restarts)"; last="$state $reason $restarts"
        fi
        case $state in
            RUNNING)
                if [[ -z $t_run0 ]]; then t_run0=$t; fi
                if ((restarts > 0)) && [[ -z $t_run1 ]]; then t_run1=$t; fi ;;
            PENDING | REQUEUED | REQUEUE_HOLD | REQUEUE_FED | COMPLETING)
                if ((signalled)) && [[ -z $t_requeue ]] && ((restarts > 0)); then t_requeue=$t; fi
                # a requeued job is normally PENDING (Reason=BeginTime) and starts on its own; a held one
                # (scontrol requeuehold, or a held submission) would wait forever: release it.
                if [[ $state == REQUEUE_HOLD || $reason == JobHeld* ]] && ((restarts > 0)); then
                    say "$label: job $JOB held after requeue ($state $reason): scontrol release"; scontrol release "$JOB"
                fi ;;
            COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED)
                break ;;
        esac
        # SIGUSR1 to the job's steps (not the batch shell: bash without a trap would die of it), once.
        if ((!signalled)) && [[ $state == RUNNING ]] && ((restarts == 0)); then
            if { [[ -z $SIGNAL_AFTER && -n $RUN_DIR ]] && compgen -G "$RUN_DIR/checkpoints/*.ckpt" >/dev/null; } ||
                { [[ -n $SIGNAL_AFTER ]] && ((t - t_run0 >= SIGNAL_AFTER)); }; then
                say "$label: ${SIGNAL_AFTER:+$SIGNAL_AFTER s up}${SIGNAL_AFTER:-run wrote a checkpoint}: scancel --signal=USR1 $JOB"
                scancel --signal=USR1 "$JOB" && { signalled=1; t_sig=$t; }
            fi
        fi
        if ((signalled && restarts == 0 && t - t_sig > REQUEUE_TIMEOUT)); then
            record FAIL "$label: no requeue within $REQUEUE_TIMEOUT s of SIGUSR1 (on a cluster the time limit would kill it): hung?"
        fi
        if ((t - start > JOB_TIMEOUT || (signalled && restarts == 0 && t - t_sig > REQUEUE_TIMEOUT))); then
            say "$label: job $JOB still $state after $((t - start)) s: cancelling (its tasks get KillWait=30 s)"
            scancel "$JOB"
            for i in $(seq 1 90); do [[ $(job_field "$JOB" JobState) == COMPLETING ]] || break; sleep 0.5; done
            break
        fi
        sleep 0.5
    done
    local eligible
    eligible=$(job_field "$JOB" EligibleTime)
    say "$label: job $JOB ended $(job_field "$JOB" JobState) exit $(job_field "$JOB" ExitCode) after $(($(date +%s) - start)) s"
    if [[ -n $t_sig && -n $t_run1 ]]; then
        say "$label: timings: running after ${t_run0:+$((t_run0 - start))} s, signal at $((t_sig - start)) s," \
            "requeued (PENDING) at $((${t_requeue:-t_sig} - start)) s, running again at $((t_run1 - start)) s" \
            "($((t_run1 - t_sig)) s after the signal; last EligibleTime $eligible), done at $(($(date +%s) - start)) s"
    fi
    if ((!signalled)); then record FAIL "$label: the job ended before it could be signalled (no checkpoint seen)"; fi
}

# check_job LABEL MAX_STEPS: the checks shared by the dummy and the training job
check_job() {
    local label=$1 max_steps=$2 state exit_code restarts step
    state=$(job_field "$JOB" JobState); exit_code=$(job_field "$JOB" ExitCode); restarts=$(job_field "$JOB" Restarts)
    if [[ $state == COMPLETED && $exit_code == 0:0 ]]; then record PASS "$label: job $JOB COMPLETED, exit 0:0"
    else record FAIL "$label: job $JOB ended $state, exit $exit_code"; fi
    if ((${restarts:-0} >= 1)); then record PASS "$label: Restarts=$restarts"
    else record FAIL "$label: Restarts=${restarts:-?}: the job was not requeued"; fi
    if grep -q "DUE TO JOB REQUEUE" "$JOB_OUT" 2>/dev/null; then record PASS "$label: console log shows SLURM's requeue"
    else record FAIL "$label: no 'DUE TO JOB REQUEUE' in $JOB_OUT"; fi
    if [[ -z $RUN_DIR || ! -d $RUN_DIR ]]; then record FAIL "$label: no run directory"; return; fi
    step=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$RUN_DIR/metrics.json" 2>/dev/null || true)
    if [[ $step == "$max_steps" ]]; then record PASS "$label: $RUN_DIR/metrics.json step=$step"
    else record FAIL "$label: metrics.json step=${step:-missing} (want $max_steps) in $RUN_DIR"; fi
}

# --- 4. dummy requeue job ------------------------------------------------------------------------------------
if ((RUN_DUMMY)); then
    # Each task counts DUMMY_STEPS steps of 0.5 s; rank 0 writes checkpoints/step_5.ckpt (the cue for the
    # signal). On SIGUSR1 rank 0 saves its step and runs `scontrol requeue`, then every task exits 0; SLURM
    # kills the rest of the job and queues it again. On restart SLURM_RESTART_COUNT > 0 and the tasks resume
    # from the saved step (a restart without a saved step is an error).
    cat >"$TMP/dummy_task.py" <<'EOF'
import json, os, signal, subprocess, sys, time

rank, job = int(os.environ["SLURM_PROCID"]), os.environ["SLURM_JOB_ID"]
restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
run_dir, max_steps = os.path.join(sys.argv[1], f"slurm-{job}"), int(sys.argv[2])
os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
state = os.path.join(run_dir, "state.json")
def log(msg): print(f"[rank {rank} restart {restarts}] {msg}", flush=True)
if restarts and not os.path.exists(state):
    log("restarted (SLURM_RESTART_COUNT>0) but no saved state"); sys.exit(1)
step = json.load(open(state))["step"] if os.path.exists(state) else 0
log(f"resumed from step {step} after {restarts} requeue(s)" if restarts else "started")
stop = []
signal.signal(signal.SIGUSR1, lambda s, f: stop.append(s))
signal.signal(signal.SIGTERM, lambda s, f: (log(f"SIGTERM at step {step}"), sys.exit(143)))
while step < max_steps:
    time.sleep(0.5)
    step += 1
    if rank == 0 and step == 5:
        open(os.path.join(run_dir, "checkpoints", "step_5.ckpt"), "w").write("5")
    if stop:
        log(f"SIGUSR1: stopping at step {step}")
        if rank == 0:
            json.dump({"step": step}, open(state, "w"))
            r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            log(f"saved step {step}; scontrol requeue {job}: exit {r.returncode} {r.stderr.strip()}")
            sys.exit(0 if r.returncode == 0 else 1)
        sys.exit(0)
if rank == 0:
    json.dump({"step": step, "restarts": restarts}, open(os.path.join(run_dir, "metrics.json"), "w"))
log(f"finished at step {step}")
EOF
    DUMMY_STEPS=30
    cat >"$TMP/dummy.sbatch" <<EOF
#!/bin/bash
#SBATCH --job-name=dummy-requeue
#SBATCH --requeue
set -euo pipefail
echo "batch script on \$(hostname): job \$SLURM_JOB_ID, SLURM_RESTART_COUNT=\${SLURM_RESTART_COUNT:-unset}, \$(date +%T)"
srun --kill-on-bad-exit=1 "$PYTHON" "$TMP/dummy_task.py" "$TMP/runs" "\$1"
EOF
    run_job dummy "$TMP/runs/slurm-JOBID" "$TMP/dummy.sbatch" -- "$DUMMY_STEPS"
    check_job dummy "$DUMMY_STEPS"
    if grep -q "resumed from step" "$JOB_OUT" 2>/dev/null; then record PASS "dummy: restart saw SLURM_RESTART_COUNT and resumed"
    else record FAIL "dummy: no resume in $JOB_OUT"; fi
    if ((FAILED)); then show_logs "$JOB_OUT"; fi
fi

# --- 5. training job -----------------------------------------------------------------------------------------
if ((RUN_TRAIN)); then
    cd "$REPO"   # train.sbatch runs from $SLURM_SUBMIT_DIR: the repository, with .venv and train.py
    [[ -f $SBATCH_FILE ]] || die "no sbatch file $SBATCH_FILE"
    [[ -x .venv/bin/python ]] || die "no .venv: run make install first"
    max_steps=$(printf '%s\n' "${TRAIN_ARGS[@]}" | sed -n 's/^trainer\.max_steps=//p' | tail -n 1)
    [[ -n $max_steps ]] || die "give trainer.max_steps=N among the training overrides (the check needs it)"
    wandb_before=$(compgen -G "wandb/*run-*" | wc -l || true)
    run_job train "$REPO/logs/*/runs/slurm-JOBID" "$SBATCH_FILE" -- "${TRAIN_ARGS[@]}"
    check_job train "$max_steps"
    if [[ -n $RUN_DIR ]]; then
        if grep -qi "requeue" "$RUN_DIR"/*.log 2>/dev/null; then record PASS "train: the run's log shows the requeue"
        else record FAIL "train: no requeue message in $RUN_DIR/*.log"; fi
        # Lightning logs this line whenever fit() starts from a checkpoint; without it the requeued job
        # trained from step 0 again (and metrics.json would still say max_steps).
        restored=$(grep -ho "Restoring states from the checkpoint path at [^ ]*" "$JOB_OUT" "$RUN_DIR"/*.log 2>/dev/null | head -n 1 || true)
        if [[ -n $restored ]]; then record PASS "train: the requeued job resumed (${restored#Restoring states from the checkpoint path at })"
        else record FAIL "train: no resume from a checkpoint ('Restoring states from the checkpoint path' in no log)"; fi
        if printf '%s\n' "${TRAIN_ARGS[@]}" | grep -q wandb; then
            # offline runs: <run dir>/wandb/offline-run-<date>_<time>-<id> (online: run-...-<id>); a resumed
            # run adds a directory with the same id
            ids=$(find "$RUN_DIR" -maxdepth 3 -type d -name '*run-*-*' 2>/dev/null | sed 's/.*-//' | sort -u)
            n=$(grep -c . <<<"$ids" || true)
            if ((n == 1)); then record PASS "train: one W&B run id ($ids) in $(find "$RUN_DIR" -maxdepth 3 -type d -name '*run-*-*' | wc -l) W&B run dir(s)"
            else record FAIL "train: $n W&B run ids under $RUN_DIR/wandb: $(tr '\n' ' ' <<<"$ids")"; fi
            if (($(compgen -G "wandb/*run-*" | wc -l || true) > wandb_before)); then
                record FAIL "train: W&B wrote into $REPO/wandb, not the run directory"
            fi
        fi
    fi
    if ((FAILED)); then show_logs "$JOB_OUT" "$RUN_DIR"/*.log; fi
fi

# --- summary ---------------------------------------------------------------------------------------------------
echo
echo "SLURM launcher test ($(($(date +%s) - T0)) s):"
printf '  %s\n' "${RESULTS[@]}"
if ((FAILED)); then echo "FAIL"; exit 1; fi
echo "PASS"
