#!/usr/bin/env bash
# The DVReward verifier: serve a Qwen-VL model (SGLang or vLLM) or a test server, wait until it answers, and
# print the training overrides that point at it.
set -euo pipefail

SCRIPT_NAME=reward_server.sh
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BACKEND=sglang
MODEL=Qwen/Qwen3-VL-30B-A3B-Instruct
SERVED_NAME=""
HOST=0.0.0.0
PORT=30000
TP=1
DP=1
GPUS=""
CONTEXT_LENGTH=4096
MEM_FRACTION=0.9
MAX_RUNNING=""
TORCH_COMPILE=1
API_KEY_ENV=""
SERVER_FLAGS=()
VENV=""
PYTHON=python3
ADVERTISE_HOST=""
LOG=""
WAIT_TIMEOUT_S=""
DETACH=0
ENDPOINTS=""

usage() {
  cat <<EOF
Usage: launch/reward_server.sh serve [--backend sglang|vllm|toy|constant] [flags]
       launch/reward_server.sh check --endpoints URL[,URL...]
       launch/reward_server.sh stop [--port P | --log FILE]   (flags go before or after the command)

serve   start the server (output in --log), wait for GET /v1/models, print the overrides for training;
        then stay in the foreground (Ctrl-C stops it), or return at once with --detach
check   ask running servers for /v1/models and print the overrides that use all of them
stop    stop a --detach'ed server (its process group, from <log>.pid)

Backends:
  sglang    python -m sglang.launch_server (the reference's setup; --dp N replicas on N GPUs)
  vllm      vllm serve (e.g. --tp 8 for Qwen3-VL-235B-A22B)
  toy       python -m alphagrpo_jax.toy.serve: the toy world's exact verifier
  constant  python -m alphagrpo_jax.reward.openai_server: P(yes)=0.5 to everything (plumbing checks)

serve flags:
  --model M               default Qwen/Qwen3-VL-30B-A3B-Instruct (a hub id or a local path)
  --served-model-name N   name clients use (= reward.model); default: --model
  --host H, --port P      bind address (default 0.0.0.0) and port (default 30000)
  --tp N, --dp N          tensor / data parallel degree (default 1 / 1): tp x dp GPUs
  --gpus 0,1,...          CUDA_VISIBLE_DEVICES for the server; must list tp x dp GPUs
  --context-length N      default 4096
  --mem-fraction F        GPU memory for weights + KV cache (default 0.9)
  --max-running-requests N  concurrent sequences (default: sglang 4096, vllm 1024)
  --no-torch-compile      sglang without --enable-torch-compile (faster start)
  --api-key-env NAME      require the key held in env var NAME (also what reward.api_key_env must name)
  --server-flag F         extra server flag (repeatable), e.g. --server-flag=--enable-metrics
  --venv DIR              the serving stack's virtualenv: DIR/bin goes first on PATH
  --python PY             interpreter for sglang/toy/constant and the readiness check (default python3)
  --advertise-host H      host in the printed endpoint (default: this machine's hostname)
  --log FILE              server output (default ./reward_server_<port>.log); its pid goes to FILE.pid
  --wait-timeout S        seconds to wait for the model to load (default 1800)
  --detach                leave the server running in the background and return once it is ready
  --dry-run               print every command without running any
check flags:
  --endpoints URLS        comma-separated base URLs, e.g. http://10.0.0.5:30000/v1,http://10.0.0.6:30000/v1
  --api-key-env NAME, --wait-timeout S (default 60 for check)

Examples:
  launch/reward_server.sh serve --gpus 0,1,2,3 --dp 4                      # 4 replicas of the 30B-A3B verifier
  launch/reward_server.sh serve --backend vllm --model Qwen/Qwen3-VL-235B-A22B-Instruct --tp 8
  launch/reward_server.sh check --endpoints http://10.0.0.5:30000/v1,http://10.0.0.6:30000/v1
EOF
}

[[ $# -gt 0 ]] || { usage; exit 2; }
COMMAND=
while (($#)); do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case $1 in
    -h | --help) usage; exit 0 ;;
    --backend) need_value "$@"; BACKEND=$2 ;;
    --model) need_value "$@"; MODEL=$2 ;;
    --served-model-name) need_value "$@"; SERVED_NAME=$2 ;;
    --host) need_value "$@"; HOST=$2 ;;
    --port) need_value "$@"; require_int "$2" --port; PORT=$2 ;;
    --tp) need_value "$@"; require_int "$2" --tp; TP=$2 ;;
    --dp) need_value "$@"; require_int "$2" --dp; DP=$2 ;;
    --gpus) need_value "$@"; GPUS=$2 ;;
    --context-length) need_value "$@"; require_int "$2" --context-length; CONTEXT_LENGTH=$2 ;;
    --mem-fraction) need_value "$@"; MEM_FRACTION=$2 ;;
    --max-running-requests) need_value "$@"; require_int "$2" --max-running-requests; MAX_RUNNING=$2 ;;
    --api-key-env) need_value "$@"; API_KEY_ENV=$2 ;;
    --server-flag) need_raw_value "$@"; SERVER_FLAGS+=("$2") ;;
    --venv) need_value "$@"; VENV=$2 ;;
    --python) need_value "$@"; PYTHON=$2 ;;
    --advertise-host) need_value "$@"; ADVERTISE_HOST=$2 ;;
    --log) need_value "$@"; LOG=$2 ;;
    --wait-timeout) need_value "$@"; require_int "$2" --wait-timeout; WAIT_TIMEOUT_S=$2 ;;
    --endpoints) need_value "$@"; ENDPOINTS=$2 ;;
    --no-torch-compile) TORCH_COMPILE=0; shift; continue ;;
    --detach) DETACH=1; shift; continue ;;
    --dry-run) DRY_RUN=1; shift; continue ;;
    -*) die "unknown flag '$1' (see --help)" ;;
    *) take_command "$1" serve check stop; shift; continue ;;
  esac
  shift 2
done
[[ -n $COMMAND ]] || die "missing command; one of: serve check stop"

LOG=${LOG:-reward_server_$PORT.log}
PID_FILE=$LOG.pid
WAIT_MODELS=$REPO_ROOT/launch/wait_models.py
if [[ -n $VENV ]]; then
  [[ -d $VENV/bin || $DRY_RUN == 1 ]] || die "--venv $VENV: no $VENV/bin"
  export_var PATH "$VENV/bin:$PATH"
fi
if [[ -n $API_KEY_ENV ]]; then
  [[ $API_KEY_ENV =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--api-key-env expects a variable name, got '$API_KEY_ENV'"
  [[ -n ${!API_KEY_ENV:-} ]] || die "--api-key-env $API_KEY_ENV: that environment variable is empty"
fi

# The overrides to append to the training command. `ids` = the served model ids, from /v1/models.
print_overrides() {
  local urls=$1 ids=$2 tuple="" u list
  IFS=, read -r -a list <<<"$urls"
  for u in "${list[@]}"; do tuple+="'$u',"; done
  if ((${#list[@]} > 1)); then tuple=${tuple%,}; fi  # ('a',) is a 1-tuple; ('a','b') needs no comma
  local line="--config.reward.endpoints=\"($tuple)\""
  [[ -z $ids ]] || line+=" --config.reward.model=$ids"
  [[ -z $API_KEY_ENV ]] || line+=" --config.reward.api_key_env=$API_KEY_ENV"
  note "training overrides:"
  printf '%s\n' "$line"
}

check_servers() {
  require "$ENDPOINTS" --endpoints "-" "comma-separated base URLs of running servers"
  local list wait=(--timeout "${WAIT_TIMEOUT_S:-60}")
  IFS=, read -r -a list <<<"$ENDPOINTS"
  [[ -z $API_KEY_ENV ]] || wait+=(--api-key-env "$API_KEY_ENV")
  print_cmd "$PYTHON" "$WAIT_MODELS" "${list[@]}" "${wait[@]}"
  if ((DRY_RUN)); then
    print_overrides "$ENDPOINTS" ""
    return
  fi
  local out ids
  out=$("$PYTHON" "$WAIT_MODELS" "${list[@]}" "${wait[@]}") || die "not every endpoint answered"
  printf '%s\n' "$out"
  ids=$(awk '{print $2}' <<<"$out" | sort -u)
  [[ $(wc -l <<<"$ids") -eq 1 ]] || die "the endpoints serve different models: $(tr '\n' ' ' <<<"$ids")"
  print_overrides "$ENDPOINTS" "$ids"
}

server_command() {
  local name=${SERVED_NAME:-$MODEL}
  case $BACKEND in
    sglang)
      SERVER=("$PYTHON" -m sglang.launch_server --model-path "$MODEL" --served-model-name "$name"
        --host "$HOST" --port "$PORT" --tp "$TP" --dp "$DP" --context-length "$CONTEXT_LENGTH"
        --mem-fraction-static "$MEM_FRACTION" --max-running-requests "${MAX_RUNNING:-4096}" --enable-multimodal)
      if ((TORCH_COMPILE)); then SERVER+=(--enable-torch-compile); fi ;;
    vllm)
      SERVER=(vllm serve "$MODEL" --served-model-name "$name" --host "$HOST" --port "$PORT"
        --tensor-parallel-size "$TP" --data-parallel-size "$DP" --max-model-len "$CONTEXT_LENGTH"
        --gpu-memory-utilization "$MEM_FRACTION" --max-num-seqs "${MAX_RUNNING:-1024}"
        --limit-mm-per-prompt '{"image": 1, "video": 0}') ;;
    toy)
      SERVER=("$PYTHON" -m alphagrpo_jax.toy.serve --host "$HOST" --port "$PORT")
      [[ -z $SERVED_NAME ]] || SERVER+=(--model "$SERVED_NAME") ;;
    constant)
      SERVER=("$PYTHON" -m alphagrpo_jax.reward.openai_server --host "$HOST" --port "$PORT"
        --model "${SERVED_NAME:-constant-verifier}") ;;
    *) die "--backend must be sglang, vllm, toy or constant, got '$BACKEND'" ;;
  esac
  if [[ -n $API_KEY_ENV ]]; then
    case $BACKEND in
      sglang | vllm) SERVER+=(--api-key "${!API_KEY_ENV}") ;;
      *) die "--api-key-env: the $BACKEND server takes no key" ;;
    esac
  fi
  SERVER+=("${SERVER_FLAGS[@]}")
}

serve() {
  server_command
  if [[ -n $GPUS ]]; then
    [[ $GPUS =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus expects a list like 0,1,2,3, got '$GPUS'"
    local n
    n=$(tr ',' '\n' <<<"$GPUS" | wc -l)
    if [[ $BACKEND == sglang || $BACKEND == vllm ]] && ((n != TP * DP)); then
      die "--gpus lists $n GPUs but --tp $TP x --dp $DP needs $((TP * DP))"
    fi
    export_var CUDA_VISIBLE_DEVICES "$GPUS"
  fi
  if [[ $BACKEND == vllm ]]; then require_tool vllm "install vLLM, or pass its --venv"; fi
  require_tool "$PYTHON" "pass --python or --venv"
  if ((!DRY_RUN)) && [[ -f $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    die "a server from $PID_FILE is running (pid $(cat "$PID_FILE")); stop it first: $SCRIPT_NAME stop --log $LOG"
  fi
  local base="http://127.0.0.1:$PORT/v1" advertise=${ADVERTISE_HOST:-$(hostname)}
  local wait=("$PYTHON" "$WAIT_MODELS" "$base" --timeout "${WAIT_TIMEOUT_S:-1800}")
  [[ -z $API_KEY_ENV ]] || wait+=(--api-key-env "$API_KEY_ENV")
  print_cmd setsid "${SERVER[@]}"
  note "output to $LOG; process group id to $PID_FILE"
  print_cmd "${wait[@]}" --pid '$!'
  if ((DRY_RUN)); then
    local name=${SERVED_NAME:-$MODEL}
    [[ $BACKEND != toy ]] || name=$SERVED_NAME  # else the toy server's own default, read from /v1/models
    [[ $BACKEND != constant ]] || name=${SERVED_NAME:-constant-verifier}
    print_overrides "http://$advertise:$PORT/v1" "$name"
    return
  fi
  # Its own session, so stopping it ends every worker process it spawned (SGLang/vLLM run several).
  setsid "${SERVER[@]}" >>"$LOG" 2>&1 </dev/null &
  local pid=$! out
  echo "$pid" >"$PID_FILE"
  if ((!DETACH)); then
    # shellcheck disable=SC2064  # pid and the file name are fixed now; the trap runs after serve() returned
    trap "kill -TERM -- -$pid 2>/dev/null || true; rm -f $(shell_quote "$PID_FILE")" EXIT
    trap 'exit 130' INT TERM
  fi
  out=$("${wait[@]}" --pid "$pid") || { tail -n 20 "$LOG" >&2; die "the server did not come up (log: $LOG)"; }
  note "ready: $out"
  print_overrides "http://$advertise:$PORT/v1" "$(awk '{print $2}' <<<"$out")"
  if ((DETACH)); then
    note "running in the background (pid $pid); stop with: launch/$SCRIPT_NAME stop --log $LOG"
  else
    note "serving in the foreground; Ctrl-C stops it (log: $LOG)"
    wait "$pid"
  fi
}

stop_server() {
  [[ -f $PID_FILE ]] || die "no $PID_FILE: nothing to stop (pass the --port or --log used to start it)"
  local pid
  pid=$(cat "$PID_FILE")
  if ((!DRY_RUN)) && ! kill -0 "$pid" 2>/dev/null; then
    note "the server (pid $pid) is not running"
    rm -f "$PID_FILE"
    return
  fi
  run_cmd kill -TERM -- "-$pid"
  if ((!DRY_RUN)); then
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
  fi
}

case $COMMAND in
  serve) serve ;;
  check) check_servers ;;
  stop) stop_server ;;
esac
