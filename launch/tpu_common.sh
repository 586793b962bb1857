# shellcheck shell=bash disable=SC2034  # (variables are read by the scripts that source this file)
# TPU VM helpers shared by tpu_pod.sh and tpu_queued.sh (sourced after common.sh): the flags both take, and
# the per-node steps (copy code, install, start/stop training, logs). A "node" is one TPU VM slice; every
# step runs on all of its workers at once through `gcloud compute tpus tpu-vm ssh/scp --worker=all`.
#
# On each worker the run lives in ~/$REMOTE_DIR: the code, .venv (jax[tpu]), .train.env (optional
# environment, mode 600), logs/train-<hostname>.log (appended per start) and logs/train.pid (the run's
# process group, so `stop` ends the trainer and everything it started).

ZONE=${ALPHAGRPO_TPU_ZONE:-${CLOUDSDK_COMPUTE_ZONE:-}}
PROJECT=${ALPHAGRPO_TPU_PROJECT:-}
ACCEL_TYPE=${ALPHAGRPO_TPU_TYPE:-}
RUNTIME_VERSION=${ALPHAGRPO_TPU_VERSION:-}
CONFIG=${ALPHAGRPO_CONFIG:-}
WORKDIR=${ALPHAGRPO_WORKDIR:-}
GIT_URL=${ALPHAGRPO_GIT_URL:-}
GIT_REF=${ALPHAGRPO_GIT_REF:-}
REMOTE_DIR=${ALPHAGRPO_REMOTE_DIR:-alphagrpo_jax}
ENV_FILE=${ALPHAGRPO_ENV_FILE:-}
read -r -a TRAIN_FLAGS <<<"${ALPHAGRPO_TRAIN_FLAGS:-}"
ENV_KVS=()
CREATE_FLAGS=()
WORKER=0
TAIL_LINES=100
FOLLOW=1
LOGS_DIR=tpu_logs
CONSUMED=0

TPU_FLAGS_HELP="Where (flag, or env var):
  --zone Z                ALPHAGRPO_TPU_ZONE (or CLOUDSDK_COMPUTE_ZONE)     required
  --project P             ALPHAGRPO_TPU_PROJECT            default: gcloud's configured project
  --accelerator-type T    ALPHAGRPO_TPU_TYPE               e.g. v5p-64, v5litepod-64, v6e-64, v4-32
  --version V             ALPHAGRPO_TPU_VERSION            runtime; default from the type (v4: tpu-ubuntu2204-base,
                                                           v5litepod: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5,
                                                           v6e: v2-alpha-tpuv6e)
  --spot | --reserved     provisioning model of the slice (default on-demand)
  --gcloud-flag F         extra flag for the create command (repeatable), e.g. --gcloud-flag=--network=my-net
What:
  --config PATH           ALPHAGRPO_CONFIG                 e.g. configs/bagel_7b_rt2i.py (required for train)
  --workdir gs://...      ALPHAGRPO_WORKDIR                checkpoints and metrics (required for train; must
                                                           be gs:// since every worker writes there)
  -- FLAGS...             ALPHAGRPO_TRAIN_FLAGS            extra trainer flags, e.g. -- --config.total_steps=100
  --env NAME=VALUE        environment for the trainer (repeatable; printed, so no secrets here)
  --env-file PATH         ALPHAGRPO_ENV_FILE               NAME=VALUE lines copied to every worker (mode 600) and
                                                           sourced before training: put OPENAI_API_KEY here
Code:
  --git-url URL --ref R   ALPHAGRPO_GIT_URL/_GIT_REF       workers clone URL and check out R; default: copy this
                                                           checkout (tracked + untracked, not ignored files)
  --remote-dir D          ALPHAGRPO_REMOTE_DIR             default alphagrpo_jax (under the workers' home)
Logs:
  --worker N              worker whose log \`logs\` tails (default 0)
  --lines N, --no-follow  for \`logs\`
  --logs-dir D            where \`collect\` copies every worker's log (default ./tpu_logs/<node>/)
Other:
  --dry-run               print every command without running any
  -h, --help
The trainer exits 0 when finished, 75 when preempted (SIGTERM, e.g. \`stop\` or a maintenance event: it first
checkpoints its step and logs 'preempted at step N'; \`train\` again resumes it), 1 on an error (docs/reliability.md)."

# Parses one flag shared by the TPU scripts; sets CONSUMED to the number of words it took.
tpu_parse_flag() {
  CONSUMED=2
  case $1 in
    --zone) need_value "$@"; ZONE=$2 ;;
    --project) need_value "$@"; PROJECT=$2 ;;
    --accelerator-type) need_value "$@"; ACCEL_TYPE=$2 ;;
    --version) need_value "$@"; RUNTIME_VERSION=$2 ;;
    --config) need_value "$@"; CONFIG=$2 ;;
    --workdir) need_value "$@"; WORKDIR=$2 ;;
    --git-url) need_value "$@"; GIT_URL=$2 ;;
    --ref) need_value "$@"; GIT_REF=$2 ;;
    --remote-dir) need_value "$@"; REMOTE_DIR=$2 ;;
    --env-file) need_value "$@"; ENV_FILE=$2 ;;
    --env)
      need_value "$@"
      [[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env expects NAME=VALUE, got '$2'"
      ENV_KVS+=("$2") ;;
    --gcloud-flag) need_raw_value "$@"; CREATE_FLAGS+=("$2") ;;
    --worker) need_value "$@"; require_int "$2" --worker; WORKER=$2 ;;
    --lines) need_value "$@"; require_int "$2" --lines; TAIL_LINES=$2 ;;
    --logs-dir) need_value "$@"; LOGS_DIR=$2 ;;
    --spot | --reserved) CREATE_FLAGS+=("$1"); CONSUMED=1 ;;
    --no-follow) FOLLOW=0; CONSUMED=1 ;;
    --dry-run) DRY_RUN=1; CONSUMED=1 ;;
    *) die "unknown flag '$1' (see --help)" ;;
  esac
}

default_runtime_version() {
  case $1 in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default runtime --version for accelerator type '$1'; pass --version" ;;
  esac
}

# Checks what creating a slice needs; fills in the runtime version.
tpu_check_create() {
  require "$ZONE" --zone ALPHAGRPO_TPU_ZONE "the TPU zone, e.g. us-east5-a"
  require "$ACCEL_TYPE" --accelerator-type ALPHAGRPO_TPU_TYPE "the slice type, e.g. v5p-64"
  [[ -n $RUNTIME_VERSION ]] || RUNTIME_VERSION=$(default_runtime_version "$ACCEL_TYPE")
}

tpu_check_train() {
  require "$CONFIG" --config ALPHAGRPO_CONFIG "the training config, e.g. configs/bagel_7b_rt2i.py"
  require "$WORKDIR" --workdir ALPHAGRPO_WORKDIR "a gs:// folder for checkpoints and metrics"
  [[ $WORKDIR == gs://* ]] ||
    die "--workdir must be a gs:// path (every worker writes checkpoints there), got '$WORKDIR'"
  [[ -z $ENV_FILE || -f $ENV_FILE ]] || die "--env-file $ENV_FILE: no such file"
  [[ -f $REPO_ROOT/$CONFIG || -n $GIT_URL ]] || die "--config $CONFIG: no such file under $REPO_ROOT"
}

tpu_check_code() {
  [[ -z $GIT_URL || -n $GIT_REF ]] || die "--git-url needs --ref (a branch, tag or commit)"
  [[ -n $GIT_URL || -z $GIT_REF ]] || die "--ref needs --git-url"
}

loc_flags() {
  LOC=(--zone="$ZONE")
  [[ -z $PROJECT ]] || LOC+=(--project="$PROJECT")
}

tpu_ssh() {  # node worker command
  loc_flags
  run_cmd gcloud compute tpus tpu-vm ssh "$1" "${LOC[@]}" --worker="$2" --command="$3"
}

tpu_scp() {  # src dest (one side is node:path) -- copies to/from every worker
  loc_flags
  run_cmd gcloud compute tpus tpu-vm scp "$1" "$2" "${LOC[@]}" --worker=all
}

# The repo as a tarball: git-tracked and untracked-but-not-ignored files (no .venv, no caches).
TARBALL=${TMPDIR:-/tmp}/alphagrpo_jax-src.tgz
tpu_pack_source() {
  [[ -z $GIT_URL ]] || return 0
  # shellcheck disable=SC2016  # $1/$2 expand in the inner bash, which gets the paths as arguments
  run_cmd bash -c 'cd "$1" && git ls-files -z -co --exclude-standard | tar --null --ignore-failed-read -czf "$2" -T -' \
    _ "$REPO_ROOT" "$TARBALL"
}

# Code on every worker of a node, then a venv with the project and jax[tpu].
tpu_setup_node() {
  local node=$1 dir fetch install
  dir=$(shell_quote "$REMOTE_DIR")
  if [[ -n $GIT_URL ]]; then
    fetch="if [ ! -d $dir/.git ]; then git clone -q $(shell_quote "$GIT_URL") $dir; fi"
    fetch+=" && git -C $dir fetch -q origin $(shell_quote "$GIT_REF") && git -C $dir checkout -q --detach FETCH_HEAD"
  else
    tpu_scp "$TARBALL" "$node:alphagrpo_jax-src.tgz"
    fetch="mkdir -p $dir && tar -xzf alphagrpo_jax-src.tgz -C $dir && rm alphagrpo_jax-src.tgz"
  fi
  # Some TPU images lack python3-venv; install it only when venv creation fails.
  install="cd $dir && { [ -x .venv/bin/python ] || python3 -m venv .venv || { sudo apt-get -qq update"
  install+=" && sudo apt-get -qq install -y python3-venv && python3 -m venv .venv; }; }"
  install+=" && .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e '.[tpu]' -c constraints.txt"
  tpu_ssh "$node" all "set -e; $fetch && $install && echo \"\$(hostname): ready\""
}

# Starts training in the background on every worker of a node. ALPHAGRPO_DISTRIBUTED=1 because a TPU VM
# finds its peers through the metadata server, not through TPU_WORKER_HOSTNAMES (a GKE variable), and
# jax.distributed.initialize() is safe on single-host TPU slices too.
tpu_train_node() {
  local node=$1 dir args="" envs="ALPHAGRPO_DISTRIBUTED=1" kv log cmd
  dir=$(shell_quote "$REMOTE_DIR")
  if [[ -n $ENV_FILE ]]; then
    tpu_scp "$ENV_FILE" "$node:$REMOTE_DIR/.train.env"
  fi
  for kv in "${ENV_KVS[@]}"; do
    envs+=" ${kv%%=*}=$(shell_quote "${kv#*=}")"
  done
  args=$(join_quoted -m alphagrpo_jax.train --config "$CONFIG" "--config.workdir=$WORKDIR" "${TRAIN_FLAGS[@]}")
  # shellcheck disable=SC2016  # $(hostname) is expanded on each worker
  log='logs/train-$(hostname).log'
  cmd="set -e; cd $dir; mkdir -p logs"
  cmd+="; if [ -f logs/train.pid ] && kill -0 \"\$(cat logs/train.pid)\" 2>/dev/null; then"
  cmd+=" echo \"\$(hostname): a run is going (pid \$(cat logs/train.pid)); stop it first\" >&2; exit 1; fi"
  cmd+="; if [ -f .train.env ]; then chmod 600 .train.env; set -a; . ./.train.env; set +a; fi"
  cmd+="; log=$log; echo \"=== \$(date -u +%FT%TZ) start\" >>\"\$log\"; rm -f logs/train.pid"
  # The run records its own pid once it leads a new session (setsid may fork), so the pid is its group's.
  cmd+="; $envs setsid bash -c 'echo \$\$ >logs/train.pid; exec nohup \"\$@\"' _ .venv/bin/python $args"
  cmd+=" >>\"\$log\" 2>&1 </dev/null &"
  cmd+=" for _ in \$(seq 100); do [ -s logs/train.pid ] && break; sleep 0.1; done"
  cmd+="; echo \"\$(hostname): started pid \$(cat logs/train.pid), log ~/$REMOTE_DIR/\$log\""
  tpu_ssh "$node" all "$cmd"
}

tpu_stop_node() {
  local dir cmd
  dir=$(shell_quote "$REMOTE_DIR")
  cmd="cd $dir 2>/dev/null && [ -f logs/train.pid ] || { echo \"\$(hostname): no run\"; exit 0; }"
  cmd+="; p=\$(cat logs/train.pid); kill -TERM -- -\$p 2>/dev/null || true"
  cmd+="; for _ in \$(seq 60); do kill -0 \$p 2>/dev/null || break; sleep 1; done"
  cmd+="; kill -KILL -- -\$p 2>/dev/null || true; rm -f logs/train.pid; echo \"\$(hostname): stopped \$p\""
  tpu_ssh "$1" all "$cmd"
}

tpu_status_node() {
  local dir cmd
  dir=$(shell_quote "$REMOTE_DIR")
  cmd="cd $dir 2>/dev/null || { echo \"\$(hostname): not set up\"; exit 0; }"
  cmd+="; if [ -f logs/train.pid ] && kill -0 \"\$(cat logs/train.pid)\" 2>/dev/null;"
  cmd+=" then echo \"\$(hostname): running (pid \$(cat logs/train.pid))\"; else echo \"\$(hostname): not running\"; fi"
  cmd+="; tail -n 2 \"logs/train-\$(hostname).log\" 2>/dev/null || true"
  tpu_ssh "$1" all "$cmd"
}

tpu_logs_node() {
  local follow=""
  if ((FOLLOW)); then follow=" -F"; fi
  tpu_ssh "$1" "$WORKER" "tail -n $TAIL_LINES$follow ~/$(shell_quote "$REMOTE_DIR")/logs/train-\$(hostname).log"
}

tpu_collect_node() {
  run_cmd mkdir -p "$LOGS_DIR/$1"
  tpu_scp "$1:$REMOTE_DIR/logs/train-*.log" "$LOGS_DIR/$1/"
}
