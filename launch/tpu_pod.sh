#!/usr/bin/env bash
# Train on one TPU VM slice: create (or reuse) it, copy the code to every worker, install, run, stop, delete.
set -euo pipefail

SCRIPT_NAME=tpu_pod.sh
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=tpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"

NAME=${ALPHAGRPO_TPU_NAME:-}

usage() {
  cat <<EOF
Usage: launch/tpu_pod.sh COMMAND --name NAME --zone ZONE [flags] [-- trainer flags]   (flags go before or after COMMAND)

Commands:
  create    create the slice, or reuse it when it already exists and is READY
  setup     copy the code to every worker and install .[tpu] in ~/REMOTE_DIR/.venv
  train     start 'python -m alphagrpo_jax.train --config ... --config.workdir=...' on every worker
            (nohup, one log per worker: ~/REMOTE_DIR/logs/train-<hostname>.log)
  up        create + setup + train
  status    whether the run is alive on each worker, with the last log lines
  logs      tail one worker's log (--worker N, default 0)
  collect   copy every worker's log to --logs-dir/NAME/
  stop      stop the run on every worker (SIGTERM to its process group, SIGKILL after 60 s); the trainer
            checkpoints its current step and exits 75 (preempted: \`train\` again resumes it)
  delete    delete the slice

Slice:
  --name NAME             ALPHAGRPO_TPU_NAME               required
$TPU_FLAGS_HELP

Example:
  launch/tpu_pod.sh up --name grpo-v5p --zone us-east5-a --accelerator-type v5p-64 \\
    --config configs/bagel_7b_rt2i.py --workdir gs://my-bucket/runs/rt2i-1 --env-file reward.env \\
    -- --config.reward.endpoints="('http://10.0.0.5:30000/v1',)"
EOF
}

[[ $# -gt 0 ]] || { usage; exit 2; }
COMMAND=

while (($#)); do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case $1 in
    -h | --help) usage; exit 0 ;;
    --name) need_value "$@"; NAME=$2; shift 2 ;;
    --) shift; TRAIN_FLAGS+=("$@"); break ;;
    -*) tpu_parse_flag "$@"; shift "$CONSUMED" ;;
    *) take_command "$1" create setup train up status logs collect stop delete; shift ;;
  esac
done
[[ -n $COMMAND ]] || die "missing command; one of: create setup train up status logs collect stop delete"

require "$NAME" --name ALPHAGRPO_TPU_NAME "the slice's name"
require "$ZONE" --zone ALPHAGRPO_TPU_ZONE "the TPU zone, e.g. us-east5-a"
require_tool gcloud "install the Google Cloud SDK"
tpu_check_code

create_slice() {
  tpu_check_create
  loc_flags
  local describe=(gcloud compute tpus tpu-vm describe "$NAME" "${LOC[@]}" --format='value(state)')
  local create=(gcloud compute tpus tpu-vm create "$NAME" "${LOC[@]}" --accelerator-type="$ACCEL_TYPE"
    --version="$RUNTIME_VERSION" "${CREATE_FLAGS[@]}")
  if ((DRY_RUN)); then
    print_cmd "${describe[@]}"
    note "if the slice does not exist:"
    print_cmd "${create[@]}"
    return
  fi
  print_cmd "${describe[@]}"
  local state
  if state=$("${describe[@]}" 2>/dev/null); then
    [[ $state == READY ]] || die "slice $NAME exists in state '$state'; wait, or delete it (tpu_pod.sh delete)"
    note "reusing slice $NAME (READY)"
  else
    run_cmd "${create[@]}"
  fi
}

case $COMMAND in
  create) create_slice ;;
  setup) tpu_pack_source; tpu_setup_node "$NAME" ;;
  train) tpu_check_train; tpu_train_node "$NAME" ;;
  up)
    tpu_check_train
    create_slice
    tpu_pack_source
    tpu_setup_node "$NAME"
    tpu_train_node "$NAME"
    ;;
  status) tpu_status_node "$NAME" ;;
  logs) tpu_logs_node "$NAME" ;;
  collect) tpu_collect_node "$NAME" ;;
  stop) tpu_stop_node "$NAME" ;;
  delete) loc_flags; run_cmd gcloud compute tpus tpu-vm delete "$NAME" "${LOC[@]}" --quiet ;;
esac
