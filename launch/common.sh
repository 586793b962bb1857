# shellcheck shell=bash disable=SC2034  # (variables are read by the scripts that source this file)
# Helpers shared by the launch scripts (sourced, never run): print-then-run, --dry-run, flag checks.
#
# Every command a script runs goes through `run_cmd`, which prints it first as `+ word word ...`, quoted so
# the line pastes back into a shell. With DRY_RUN=1 nothing runs: the printed lines are the whole plan.

DRY_RUN=${DRY_RUN:-0}
SCRIPT_NAME=${SCRIPT_NAME:-$(basename "$0")}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 2
}

note() {
  printf '# %s\n' "$*"
}

# One word as the shell would need it: bare when safe, else single-quoted.
shell_quote() {
  local w=$1
  if [[ -z $w ]]; then
    printf "''"
  elif [[ $w =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$w"
  elif [[ $w == *$'\n'* ]]; then
    printf '%q' "$w"  # $'...\n...': the printed command stays on one line
  else
    printf "'%s'" "${w//\'/\'\\\'\'}"
  fi
}

# Words joined into one shell-safe string (to send a command line through ssh --command).
join_quoted() {
  local out="" w
  for w in "$@"; do
    out+="${out:+ }$(shell_quote "$w")"
  done
  printf '%s' "$out"
}

# Prints a command; the value after --api-key is shown as *** (the log of a launch must not hold secrets).
print_cmd() {
  local out="+" hide=0 w
  for w in "$@"; do
    if ((hide)); then
      out+=" '***'"
      hide=0
      continue
    fi
    case $w in
      --api-key) hide=1 ;;
      --api-key=*) w="--api-key=***" ;;
    esac
    out+=" $(shell_quote "$w")"
  done
  printf '%s\n' "$out"
}

run_cmd() {
  print_cmd "$@"
  ((DRY_RUN)) || "$@"
}

# Sets and exports NAME=VALUE, printing it as a command so a dry run shows the environment too.
export_var() {
  printf '+ export %s=%s\n' "$1" "$(shell_quote "$2")"
  export "$1=$2"
}

# `need_value "$@"` inside a flag loop: dies unless the flag in $1 is followed by a value (not another flag).
need_value() {
  [[ $# -ge 2 && -n $2 ]] || die "flag $1 needs a value"
  [[ $2 != --* ]] || die "flag $1 needs a value, got the flag '$2'"
}

# `take_command WORD COMMAND...` inside a flag loop, for a word that is not a flag: WORD is the subcommand, so
# flags may come before or after it (`x.sh --dry-run up ...` = `x.sh up --dry-run ...`). Sets COMMAND.
take_command() {
  local word=$1 c
  shift
  [[ -z ${COMMAND:-} ]] || die "one command per call, got '$COMMAND' and '$word'"
  for c in "$@"; do
    if [[ $word == "$c" ]]; then
      COMMAND=$word
      return
    fi
  done
  die "unknown command '$word'; one of: $*"
}

# The same for flags whose values are themselves flags (--xla-flag=--xla_..., --server-flag=--foo).
need_raw_value() {
  [[ $# -ge 2 && -n $2 ]] || die "flag $1 needs a value"
}

# `require VALUE FLAG ENV WHAT`: dies with the flag and env var to set when VALUE is empty.
require() {
  [[ -n $1 ]] || die "missing $2 (or env $3): $4"
}

# A path given relative to the caller's folder, made absolute (scripts cd to the repo root later). A bare
# command name (no slash, e.g. python3) is left for PATH to resolve.
caller_path() {
  if [[ -z $1 || $1 == /* || $1 == *://* || $1 != */* && ${2:-} == command ]]; then
    printf '%s' "$1"
  else
    printf '%s/%s' "$(pwd)" "$1"
  fi
}

require_int() {
  [[ $1 =~ ^[0-9]+$ ]] || die "$2 must be a non-negative integer, got '$1'"
}

require_tool() {
  ((DRY_RUN)) || command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH ($2)"
}
