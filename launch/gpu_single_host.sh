#!/usr/bin/env bash
# Train on one GPU host (or one node of a multi-node GPU job): venv with jax[cuda12], XLA GPU flags, run.
set -euo pipefail

SCRIPT_NAME=gpu_single_host.sh
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# XLA flags for GPU training, each with why. XLA_FLAGS must be set before python starts (XLA reads it once,
# at backend start-up) and an unknown flag aborts the process, so tests/launch checks every name against
# the installed jaxlib. Maxtext's single-host GPU recipe and NVIDIA's JAX-Toolbox use the same set.
XLA_GPU_FLAGS=(
  --xla_gpu_enable_latency_hiding_scheduler=true  # schedule collectives early so they overlap compute
  --xla_gpu_enable_highest_priority_async_stream=true  # collectives' stream first, so compute cannot starve them
  --xla_gpu_enable_triton_gemm=false  # matmuls on cuBLAS: Triton gemm autotuning is slow and rarely wins here
  --xla_gpu_all_reduce_combine_threshold_bytes=134217728  # 128 MiB: fewer, larger all-reduces (grad sync)
  --xla_gpu_all_gather_combine_threshold_bytes=134217728  # 128 MiB: FSDP weight gathers batched per layer
  --xla_gpu_reduce_scatter_combine_threshold_bytes=67108864  # 64 MiB: FSDP gradient reduce-scatters batched too
  --xla_gpu_enable_pipelined_all_gather=true  # prefetch the next scanned layer's weights during this one
  --xla_gpu_enable_pipelined_reduce_scatter=true  # and scatter the previous layer's grads meanwhile
  --xla_gpu_enable_pipelined_all_reduce=true  # same for all-reduces inside the layer scan
  --xla_gpu_enable_while_loop_double_buffering=true  # unroll loops x2 so one iteration's transfers overlap the next
)

CONFIG=${ALPHAGRPO_CONFIG:-}
WORKDIR=${ALPHAGRPO_WORKDIR:-}
VENV=${ALPHAGRPO_VENV:-$REPO_ROOT/.venv}
PYTHON=""
INSTALL=auto
GPUS=""
MEM_FRACTION=0.9
EXTRA_XLA=()
DEFAULT_XLA=1
COORDINATOR=""
NUM_PROCESSES=""
PROCESS_ID=""
LOCAL_DEVICE_IDS=""
LOG=""
PRINT_XLA=0
read -r -a TRAIN_FLAGS <<<"${ALPHAGRPO_TRAIN_FLAGS:-}"

usage() {
  cat <<EOF
Usage: launch/gpu_single_host.sh --config PATH --workdir DIR [flags] [-- trainer flags]

Runs: python -m alphagrpo_jax.train --config PATH --config.workdir=DIR [trainer flags]
Exit status (the trainer's, passed through): 0 finished; 75 preempted (SIGTERM: the step was checkpointed;
requeue / rerun the same command to resume); 1 error (e.g. non-finite steps, no intact checkpoint); 2 usage.
  --config PATH          ALPHAGRPO_CONFIG     required, e.g. configs/toy_rt2i.py
  --workdir DIR          ALPHAGRPO_WORKDIR    required; local folder or gs://
  -- FLAGS...            ALPHAGRPO_TRAIN_FLAGS  extra trainer flags, e.g. -- --config.total_steps=100
Environment:
  --venv DIR             ALPHAGRPO_VENV       default: <repo>/.venv
  --install | --no-install  pip install -e ".[cuda12]" -c constraints.txt into the venv (default: only
                         when the venv does not exist yet or its jax has no CUDA plugin, e.g. a CPU-only venv)
  --python PY            use this interpreter as it is (no venv, no install; the repo goes on PYTHONPATH)
  --gpus 0,1,...         CUDA_VISIBLE_DEVICES (default: all); e.g. leave some to launch/reward_server.sh
  --mem-fraction F       XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.9: room for cuDNN/NCCL workspaces)
  --xla-flag F           extra XLA flag (repeatable), after the defaults (a later flag wins)
  --no-default-xla-flags
  --print-xla-flags      print the XLA_FLAGS value and exit
Multi-node GPU (one process per node; alphagrpo_jax/parallel/distributed.py reads these):
  --coordinator HOST:PORT   JAX_COORDINATOR_ADDRESS (process 0's host)
  --num-processes N         JAX_NUM_PROCESSES
  --process-id I            JAX_PROCESS_ID (0 .. N-1)
  --local-device-ids 0,1    JAX_LOCAL_DEVICE_IDS (optional)
Other:
  --log FILE             also append the output to FILE
  --dry-run              print every command without running any
  -h, --help

Default XLA flags (why):
EOF
  sed -n '/^XLA_GPU_FLAGS=(/,/^)/s/^  \(--xla_[^ ]*\)  # \(.*\)$/  \1\n      \2/p' "${BASH_SOURCE[0]}"
}

# Whether PYTHON's environment has a jax CUDA plugin (jax-cuda12-plugin, what the [cuda12] extra installs).
has_cuda_plugin() {
  "$1" -c 'import importlib.metadata as m, re, sys
names = [re.sub("[-_.]+", "-", d.metadata["Name"] or "").lower() for d in m.distributions()]
sys.exit(not any(re.fullmatch(r"jax-cuda[0-9]+-plugin", n) for n in names))' 2>/dev/null
}

while (($#)); do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case $1 in
    -h | --help) usage; exit 0 ;;
    --config) need_value "$@"; CONFIG=$2; shift 2 ;;
    --workdir) need_value "$@"; WORKDIR=$2; shift 2 ;;
    --venv) need_value "$@"; VENV=$2; shift 2 ;;
    --python) need_value "$@"; PYTHON=$2; shift 2 ;;
    --install) INSTALL=yes; shift ;;
    --no-install) INSTALL=no; shift ;;
    --gpus) need_value "$@"; GPUS=$2; shift 2 ;;
    --mem-fraction) need_value "$@"; MEM_FRACTION=$2; shift 2 ;;
    --xla-flag) need_raw_value "$@"; EXTRA_XLA+=("$2"); shift 2 ;;
    --no-default-xla-flags) DEFAULT_XLA=0; shift ;;
    --print-xla-flags) PRINT_XLA=1; shift ;;
    --coordinator) need_value "$@"; COORDINATOR=$2; shift 2 ;;
    --num-processes) need_value "$@"; require_int "$2" --num-processes; NUM_PROCESSES=$2; shift 2 ;;
    --process-id) need_value "$@"; require_int "$2" --process-id; PROCESS_ID=$2; shift 2 ;;
    --local-device-ids) need_value "$@"; LOCAL_DEVICE_IDS=$2; shift 2 ;;
    --log) need_value "$@"; LOG=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; TRAIN_FLAGS+=("$@"); break ;;
    *) die "unknown flag '$1' (see --help)" ;;
  esac
done

xla_flags=()
if ((DEFAULT_XLA)); then xla_flags+=("${XLA_GPU_FLAGS[@]}"); fi
xla_flags+=("${EXTRA_XLA[@]}")
# Flags already in the environment come last, so they win over ours.
XLA_VALUE="${xla_flags[*]}${XLA_FLAGS:+ $XLA_FLAGS}"
if ((PRINT_XLA)); then
  printf '%s\n' "$XLA_VALUE"
  exit 0
fi

require "$CONFIG" --config ALPHAGRPO_CONFIG "the training config, e.g. configs/toy_rt2i.py"
require "$WORKDIR" --workdir ALPHAGRPO_WORKDIR "a folder (or gs:// path) for checkpoints and metrics"
# A config path (`file.py` or `file.py:arg`) is taken from the current folder first, then from the repo.
if [[ ${CONFIG%%:*} != /* && -f ${CONFIG%%:*} && ! $(pwd) -ef $REPO_ROOT ]]; then CONFIG=$(pwd)/$CONFIG; fi
[[ -f ${CONFIG%%:*} || -f $REPO_ROOT/${CONFIG%%:*} ]] || die "--config $CONFIG: no such file here or in $REPO_ROOT"
[[ $MEM_FRACTION =~ ^0?\.[0-9]+$|^1(\.0*)?$ ]] || die "--mem-fraction must be in (0, 1], got '$MEM_FRACTION'"
[[ -z $GPUS || $GPUS =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus expects a list like 0,1,2,3, got '$GPUS'"
if [[ -n $COORDINATOR$NUM_PROCESSES$PROCESS_ID ]]; then
  [[ -n $COORDINATOR && -n $NUM_PROCESSES && -n $PROCESS_ID ]] ||
    die "multi-node needs all of --coordinator, --num-processes and --process-id"
  [[ $COORDINATOR =~ ^[^:]+:[0-9]+$ ]] || die "--coordinator expects HOST:PORT, got '$COORDINATOR'"
  ((PROCESS_ID < NUM_PROCESSES)) || die "--process-id $PROCESS_ID must be below --num-processes $NUM_PROCESSES"
fi
[[ -z $LOCAL_DEVICE_IDS || $LOCAL_DEVICE_IDS =~ ^[0-9]+(,[0-9]+)*$ ]] ||
  die "--local-device-ids expects a list like 0,1, got '$LOCAL_DEVICE_IDS'"

# Relative paths are the caller's; the trainer runs in the repo root.
WORKDIR=$(caller_path "$WORKDIR")
LOG=$(caller_path "$LOG")
VENV=$(caller_path "$VENV")
PYTHON=$(caller_path "$PYTHON" command)
cd "$REPO_ROOT"
if [[ -n $PYTHON ]]; then
  require_tool "$PYTHON" "--python"
  export_var PYTHONPATH "$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
  PYTHON=$VENV/bin/python
  if [[ $INSTALL != yes && -x $PYTHON ]] && ! has_cuda_plugin "$PYTHON"; then
    [[ $INSTALL == auto ]] || die "--no-install: $VENV has no jax CUDA plugin (a CPU-only venv); drop" \
      "--no-install, or run: $PYTHON -m pip install -e '.[cuda12]' -c constraints.txt"
    note "$VENV has no jax CUDA plugin (a CPU-only venv): installing the [cuda12] extra into it"
    INSTALL=yes
  fi
  if [[ $INSTALL == yes || ($INSTALL == auto && ! -x $PYTHON) ]]; then
    [[ -x $PYTHON ]] || run_cmd python3 -m venv "$VENV"
    run_cmd "$PYTHON" -m pip install -q -U pip
    run_cmd "$PYTHON" -m pip install -q -e ".[cuda12]" -c constraints.txt
  fi
fi

export_var XLA_FLAGS "$XLA_VALUE"
export_var XLA_PYTHON_CLIENT_MEM_FRACTION "$MEM_FRACTION"
[[ -z $GPUS ]] || export_var CUDA_VISIBLE_DEVICES "$GPUS"
if [[ -n $COORDINATOR ]]; then
  export_var JAX_COORDINATOR_ADDRESS "$COORDINATOR"
  export_var JAX_NUM_PROCESSES "$NUM_PROCESSES"
  export_var JAX_PROCESS_ID "$PROCESS_ID"
fi
[[ -z $LOCAL_DEVICE_IDS ]] || export_var JAX_LOCAL_DEVICE_IDS "$LOCAL_DEVICE_IDS"
export_var PYTHONUNBUFFERED 1

train=("$PYTHON" -m alphagrpo_jax.train --config "$CONFIG" "--config.workdir=$WORKDIR" "${TRAIN_FLAGS[@]}")
if [[ -z $LOG ]]; then
  run_cmd "${train[@]}"
else
  print_cmd "${train[@]}"
  note "output also appended to $LOG"
  ((DRY_RUN)) || "${train[@]}" 2>&1 | tee -a "$LOG"
fi
