#!/usr/bin/env bash
# Train through a TPU queued resource: one slice, or several (multi-slice over DCN) that start together.
set -euo pipefail

SCRIPT_NAME=tpu_queued.sh
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=tpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"

QR_ID=${ALPHAGRPO_QR_ID:-}
NODE_COUNT=${ALPHAGRPO_TPU_NODE_COUNT:-1}
NODE_PREFIX=${ALPHAGRPO_TPU_NODE_PREFIX:-}
POLL_S=60
WAIT_TIMEOUT_S=86400
DCN_FLAG=1
QR_FLAGS=()

usage() {
  cat <<EOF
Usage: launch/tpu_queued.sh COMMAND --qr-id ID --zone ZONE [flags] [-- trainer flags]  (flags: before/after COMMAND)

Commands:
  create    request the queued resource (--node-count slices of --accelerator-type), then wait
  wait      poll until the request is ACTIVE (fails on FAILED / SUSPENDED or after --wait-timeout)
  setup     copy the code to every worker of every slice and install .[tpu]
  train     start training on every worker of every slice (one log per worker, as tpu_pod.sh)
  up        create + wait + setup + train
  status | logs | collect | stop   as in tpu_pod.sh, over every slice (logs: slice --node I, worker --worker N)
  delete    delete the request and its slices (--force)

Request:
  --qr-id ID              ALPHAGRPO_QR_ID                  required
  --node-count N          ALPHAGRPO_TPU_NODE_COUNT         slices (default 1); N > 1 is multi-slice
  --node-prefix P         ALPHAGRPO_TPU_NODE_PREFIX        slice names: P (one slice) or P-0 .. P-(N-1);
                                                           default: the request id
  --best-effort           provisioning model (also --spot, --reserved); default on-demand
  --valid-until-duration D  give up queueing after D (e.g. 6h)
  --poll-seconds S        state polling period (default 60); --wait-timeout S (default 86400)
  --node I                the slice whose worker \`logs\` tails (default 0)
  --no-dcn-flag           do not add --config.mesh_dcn.data=N for N > 1 slices (set your own mesh_dcn then)
$TPU_FLAGS_HELP

Example (2 x v5p-128 over DCN, data-parallel across slices):
  launch/tpu_queued.sh up --qr-id grpo-ms --zone us-east5-a --accelerator-type v5p-128 --node-count 2 \\
    --config configs/bagel_7b_rt2i.py --workdir gs://my-bucket/runs/rt2i-ms
EOF
}

[[ $# -gt 0 ]] || { usage; exit 2; }
COMMAND=

LOG_NODE=0
while (($#)); do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case $1 in
    -h | --help) usage; exit 0 ;;
    --qr-id) need_value "$@"; QR_ID=$2; shift 2 ;;
    --node-count) need_value "$@"; require_int "$2" --node-count; NODE_COUNT=$2; shift 2 ;;
    --node-prefix) need_value "$@"; NODE_PREFIX=$2; shift 2 ;;
    --node) need_value "$@"; require_int "$2" --node; LOG_NODE=$2; shift 2 ;;
    --best-effort) QR_FLAGS+=(--best-effort); shift ;;
    --valid-until-duration) need_value "$@"; QR_FLAGS+=(--valid-until-duration="$2"); shift 2 ;;
    --poll-seconds) need_value "$@"; require_int "$2" --poll-seconds; POLL_S=$2; shift 2 ;;
    --wait-timeout) need_value "$@"; require_int "$2" --wait-timeout; WAIT_TIMEOUT_S=$2; shift 2 ;;
    --no-dcn-flag) DCN_FLAG=0; shift ;;
    --) shift; TRAIN_FLAGS+=("$@"); break ;;
    -*) tpu_parse_flag "$@"; shift "$CONSUMED" ;;
    *) take_command "$1" create wait setup train up status logs collect stop delete; shift ;;
  esac
done
[[ -n $COMMAND ]] || die "missing command; one of: create wait setup train up status logs collect stop delete"

require "$QR_ID" --qr-id ALPHAGRPO_QR_ID "the queued resource's id"
require "$ZONE" --zone ALPHAGRPO_TPU_ZONE "the TPU zone, e.g. us-east5-a"
((NODE_COUNT >= 1)) || die "--node-count must be at least 1"
((LOG_NODE < NODE_COUNT)) || die "--node $LOG_NODE: there are only $NODE_COUNT slices"
require_tool gcloud "install the Google Cloud SDK"
tpu_check_code
NODE_PREFIX=${NODE_PREFIX:-$QR_ID}

NODES=()
if ((NODE_COUNT == 1)); then
  NODES=("$NODE_PREFIX")
else
  for ((i = 0; i < NODE_COUNT; i++)); do NODES+=("$NODE_PREFIX-$i"); done
  # The mesh needs the slice count on its DCN axis (parallel/mesh.py); data parallelism across slices keeps
  # the slow DCN links for one gradient all-reduce per step.
  if ((DCN_FLAG)); then TRAIN_FLAGS+=("--config.mesh_dcn.data=$NODE_COUNT"); fi
fi

qr() {  # gcloud alpha compute tpus queued-resources SUBCOMMAND ...
  local sub=$1
  shift
  loc_flags
  run_cmd gcloud alpha compute tpus queued-resources "$sub" "$QR_ID" "${LOC[@]}" "$@"
}

create_request() {
  tpu_check_create
  local nodes=(--node-id="$NODE_PREFIX")
  ((NODE_COUNT == 1)) || nodes=(--node-count="$NODE_COUNT" --node-prefix="$NODE_PREFIX")
  qr create --accelerator-type="$ACCEL_TYPE" --runtime-version="$RUNTIME_VERSION" "${nodes[@]}" \
    "${CREATE_FLAGS[@]}" "${QR_FLAGS[@]}"
}

wait_active() {
  loc_flags
  local describe=(gcloud alpha compute tpus queued-resources describe "$QR_ID" "${LOC[@]}"
    --format='value(state.state)')
  print_cmd "${describe[@]}"
  if ((DRY_RUN)); then
    note "repeated every ${POLL_S}s until the state is ACTIVE"
    return
  fi
  local start=$SECONDS state
  while true; do
    state=$("${describe[@]}") || die "could not describe queued resource $QR_ID"
    case $state in
      ACTIVE) note "$QR_ID is ACTIVE: ${NODES[*]}"; return ;;
      FAILED | SUSPENDED)
        die "queued resource $QR_ID is $state; see: gcloud alpha compute tpus queued-resources describe $QR_ID" ;;
    esac
    ((SECONDS - start < WAIT_TIMEOUT_S)) || die "queued resource $QR_ID still $state after ${WAIT_TIMEOUT_S}s"
    note "$QR_ID: $state ($((SECONDS - start))s)"
    sleep "$POLL_S"
  done
}

each_node() {
  local node
  for node in "${NODES[@]}"; do "$1" "$node"; done
}

setup_all() { tpu_pack_source; each_node tpu_setup_node; }

case $COMMAND in
  create) create_request; wait_active ;;
  wait) wait_active ;;
  setup) setup_all ;;
  train) tpu_check_train; each_node tpu_train_node ;;
  up) tpu_check_train; create_request; wait_active; setup_all; each_node tpu_train_node ;;
  status) each_node tpu_status_node ;;
  logs) tpu_logs_node "${NODES[$LOG_NODE]}" ;;
  collect) each_node tpu_collect_node ;;
  stop) each_node tpu_stop_node ;;
  delete) qr delete --force --quiet ;;
esac
