#!/usr/bin/env bash
# One prepared check of a GPU host: install, GPU tests, a short training run, benchmarks; one log.
#
#   launch/gpu_check.sh [--out DIR] [--python PY | --venv DIR] [--skip step,step] [--dry-run]
#
# Steps: host (nvidia-smi), venv, install (.[cuda12,test] with constraints.txt), probe (jax sees a GPU),
# tests (tests/gpu: bf16 golden parity, cuDNN attention vs jnp, jitted sampling), sft (a smoke SFT run that
# exports the small release the RT2I run starts from), train (a few RT2I steps in bf16 with cuDNN attention,
# through launch/gpu_single_host.sh so its XLA flags are exercised too), bench_model, bench_sampling.
# A failed step does not stop the later ones; the summary lists each step's exit code and time, and the
# script exits 1 when any step failed. Everything goes to <out>/gpu_check.log.
set -euo pipefail

# ------------------------------------------------------------------------------------------------------------
# What the check runs. The trainer's config keys are still settling: edit HERE when they change
# (tests/launch/test_config_overrides.py parses these against the real configs).
SFT_CONFIG=configs/toy_sft.py:tiny  # a few steps of a 1-layer toy model, exported as <workdir>/release
SFT_OVERRIDES=()
TRAIN_CONFIG=configs/toy_rt2i.py    # the RT2I run gets --config.model.release=<the SFT release> too
TRAIN_OVERRIDES=(--config.total_steps=5 --config.model.param_dtype=bfloat16 --config.model.dtype=bfloat16
  --config.model.attention=cudnn)
BENCH_MODEL_ARGS=()     # benchmarks/bench_model.py defaults: --batch 4 --prefill 256 --latents 256
BENCH_SAMPLING_ARGS=()  # benchmarks/bench_sampling.py defaults
STEP_TIMEOUT_S=1200     # per step (--step-timeout)
# ------------------------------------------------------------------------------------------------------------

SCRIPT_NAME=gpu_check.sh
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STEPS=(host venv install probe tests sft train bench_model bench_sampling)
OUT_DIR=${OUT:-${TMPDIR:-/tmp}/alphagrpo_gpu_check}  # $OUT: the folder a device runner sends back
VENV=$REPO_ROOT/.venv
PYTHON=""
PIP_ARGS=()
SKIP=""

usage() {
  cat <<EOF
Usage: launch/gpu_check.sh [flags]

  --out DIR          log folder (default: \$OUT if set, else ${TMPDIR:-/tmp}/alphagrpo_gpu_check)
  --venv DIR         venv to create / install into (default <repo>/.venv)
  --python PY        use this interpreter as it is: no venv, no install (the repo goes on PYTHONPATH)
  --pip-arg A        extra pip install argument (repeatable), e.g. --pip-arg=--no-index
                     --pip-arg=--find-links=/wheels for an offline host
  --skip S1,S2       skip steps; steps: ${STEPS[*]}
  --step-timeout S   seconds per step (default $STEP_TIMEOUT_S)
  --dry-run          print the steps' commands without running any
  -h, --help

Training runs (edit the top of this script when config keys change):
  sft:   $SFT_CONFIG ${SFT_OVERRIDES[*]}
  train: $TRAIN_CONFIG ${TRAIN_OVERRIDES[*]} --config.model.release=<sft release>
EOF
}

while (($#)); do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case $1 in
    -h | --help) usage; exit 0 ;;
    --out) need_value "$@"; OUT_DIR=$2; shift 2 ;;
    --venv) need_value "$@"; VENV=$2; shift 2 ;;
    --python) need_value "$@"; PYTHON=$2; shift 2 ;;
    --pip-arg) need_raw_value "$@"; PIP_ARGS+=("$2"); shift 2 ;;
    --skip) need_value "$@"; SKIP=$2; shift 2 ;;
    --step-timeout) need_value "$@"; require_int "$2" --step-timeout; STEP_TIMEOUT_S=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) die "unknown flag '$1' (see --help)" ;;
  esac
done
OUT_DIR=$(caller_path "$OUT_DIR")
VENV=$(caller_path "$VENV")
PYTHON=$(caller_path "$PYTHON" command)
IFS=, read -r -a skip_list <<<"$SKIP"
for s in "${skip_list[@]}"; do
  [[ " ${STEPS[*]} " == *" $s "* ]] || die "--skip: unknown step '$s'; steps: ${STEPS[*]}"
done

NAMES=()
RESULTS=()
FAILED=0
TIMEOUT=(timeout --kill-after=30 "$STEP_TIMEOUT_S")
command -v timeout >/dev/null 2>&1 || TIMEOUT=()

# `step NAME CMD...`: runs CMD under the step timeout unless NAME is skipped; records the result.
step() {
  local name=$1 start rc
  shift
  printf '\n=== [%s] %s\n' "$name" "$(date -u +%FT%TZ)"
  NAMES+=("$name")
  if [[ ",$SKIP," == *",$name,"* ]]; then
    note "skipped"
    RESULTS+=("skipped")
    return 0
  fi
  print_cmd "$@"
  if ((DRY_RUN)); then
    RESULTS+=("dry-run")
    return 0
  fi
  start=$SECONDS
  set +e
  "${TIMEOUT[@]}" "$@"
  rc=$?
  set -e
  if ((rc == 0)); then
    RESULTS+=("ok $((SECONDS - start))s")
  else
    if ((rc == 124)); then note "timed out after ${STEP_TIMEOUT_S}s"; fi
    RESULTS+=("FAILED rc=$rc $((SECONDS - start))s")
    FAILED=$((FAILED + 1))
  fi
}

run_checks() {
  note "gpu_check on $(hostname) at $(date -u +%FT%TZ); repo $REPO_ROOT; log $OUT_DIR/gpu_check.log"
  cd "$REPO_ROOT"
  # A CPU-forcing JAX_PLATFORMS from the environment would hide the GPU from every step.
  unset JAX_PLATFORMS
  export PYTHONUNBUFFERED=1
  local py work
  step host nvidia-smi
  if [[ -n $PYTHON ]]; then
    py=$PYTHON
    export_var PYTHONPATH "$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
    SKIP+=",venv,install"
  else
    py=$VENV/bin/python
    [[ ! -x $py ]] || SKIP+=",venv"
  fi
  step venv python3 -m venv "$VENV"
  step install "$py" -m pip install -q -e ".[cuda12,test]" -c constraints.txt "${PIP_ARGS[@]}"
  step probe "$py" launch/gpu_probe.py
  # --confcutdir: tests/conftest.py pins the CPU platform with 8 fake devices for the CPU suite; the GPU
  # tests must not load it. ALPHAGRPO_REQUIRE_GPU turns their "no GPU" skip into a failure.
  step tests env ALPHAGRPO_REQUIRE_GPU=1 "$py" -m pytest -q -rs tests/gpu --confcutdir=tests/gpu
  work=${TMPDIR:-/tmp}/alphagrpo_gpu_check_work
  ((DRY_RUN)) || work=$(mktemp -d "$work.XXXXXX")
  step sft "$py" -m alphagrpo_jax.sft --config "$SFT_CONFIG" "--config.workdir=$work/sft" "${SFT_OVERRIDES[@]}"
  step train "$REPO_ROOT/launch/gpu_single_host.sh" --python "$py" --config "$TRAIN_CONFIG" \
    --workdir "$work/train" -- "${TRAIN_OVERRIDES[@]}" "--config.model.release=$work/sft/release"
  step bench_model "$py" benchmarks/bench_model.py "${BENCH_MODEL_ARGS[@]}"
  step bench_sampling "$py" benchmarks/bench_sampling.py "${BENCH_SAMPLING_ARGS[@]}"

  printf '\n=== summary\n'
  local i summary=""
  for i in "${!NAMES[@]}"; do
    summary+=$(printf '%-16s %s' "${NAMES[$i]}" "${RESULTS[$i]}")$'\n'
  done
  printf '%s' "$summary"
  ((DRY_RUN)) || printf '%s' "$summary" >"$OUT_DIR/gpu_check_summary.txt"
  if ((DRY_RUN)); then
    note "dry run: nothing ran"
  elif ((FAILED)); then
    note "$FAILED step(s) failed; full log: $OUT_DIR/gpu_check.log"
    return 1
  else
    note "all steps passed; full log: $OUT_DIR/gpu_check.log"
  fi
}

if ((DRY_RUN)); then
  run_checks
else
  mkdir -p "$OUT_DIR"
  run_checks 2>&1 | tee "$OUT_DIR/gpu_check.log"  # pipefail: the script's status is run_checks'
fi
