# Shared launcher for the recipes under run_scripts/<task>/ (sourced, never run on its own).
#
# A recipe sources this file, calls `ofa_parse_args "$@"`, picks its data/checkpoint paths (each one an
# environment variable with an OFA-like default) and ends with one `ofa_train ...` or `ofa_evaluate ...` call.
#
# Launch (torchrun, one process per GPU; nothing to edit in the scripts):
#   NNODES          number of machines                        (default 1)
#   NPROC_PER_NODE  processes (GPUs) per machine              (default: visible GPUs, else 1)
#   NODE_RANK       rank of this machine                      (default 0)
#   MASTER_ADDR     address of the rank-0 machine             (default 127.0.0.1)
#   MASTER_PORT     rendezvous port                           (default 29500)
#   PYTHON          interpreter                               (default: <repo>/.venv/bin/python, else python3)
#   PRECISION       bf16 | fp16 | fp32                        (default bf16; OFA used fp16, see below)
# Locations (defaults follow OFA's layout, which the original scripts reached as ../../<dir>):
#   DATASET_ROOT    <repo>/dataset      (OFA: ../../dataset; holds caption_data/, vqa_data/, refcoco_data/, ...)
#   CKPT_DIR        <repo>/checkpoints  (OFA: ../../checkpoints; ofa_large.pt, caption_large_best.pt, ...)
#   BPE_DIR         <repo>/utils/BPE    (OFA: ../../utils/BPE; encoder.json, vocab.bpe, dict.txt)
#   RUNS_DIR        <repo>/runs         (where training recipes save checkpoints; SAVE_DIR overrides per run)
#   RESULTS_DIR     <repo>/results      (OFA: ../../results; evaluation predictions)
# Each recipe adds its own DATA_DIR / DATA / RESTORE_FILE / CHECKPOINT / SAVE_DIR (see its header).
#
# `recipe.sh --dry-run [flags]` runs `$PYTHON train.py ... --dry-run` (or evaluate.py) directly, without
# torchrun, which prints the resolved configuration as JSON and reads no data. Any arguments after the
# recipe's own are passed through to train.py / evaluate.py, after the recipe's flags, so they win.

set -euo pipefail

OFA_RUN_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$OFA_RUN_SCRIPTS")

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
DATASET_ROOT=${DATASET_ROOT:-$REPO_ROOT/dataset}
CKPT_DIR=${CKPT_DIR:-$REPO_ROOT/checkpoints}
BPE_DIR=${BPE_DIR:-$REPO_ROOT/utils/BPE}
RUNS_DIR=${RUNS_DIR:-$REPO_ROOT/runs}
RESULTS_DIR=${RESULTS_DIR:-$REPO_ROOT/results}

# Number of GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists.
ofa_visible_gpus() {
  if [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
    local ids count=0 id
    IFS=',' read -r -a ids <<< "$CUDA_VISIBLE_DEVICES"
    for id in "${ids[@]}"; do [[ -n "${id// /}" ]] && count=$((count + 1)); done
    echo "$count"
  elif command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true
  else
    echo 0
  fi
}

# Split the recipe's arguments: a leading --dry-run switches to dry-run mode, the rest pass through.
ofa_parse_args() {
  OFA_DRY_RUN=0
  if [[ "${1:-}" == "--dry-run" ]]; then
    OFA_DRY_RUN=1
    shift
  fi
  OFA_EXTRA_ARGS=("$@")
}

# Mixed precision. OFA's recipes used --fp16 (caption stage 2: --memory-efficient-fp16); bf16 is the default
# here because it needs no loss scaling and stage-2 SCST collapsed under fp16 (OFA issue #108).
ofa_precision_args() {
  case "${PRECISION:-bf16}" in
    bf16) echo "--bf16" ;;
    fp16) echo "--fp16" ;;
    fp32) ;;
    *) echo "PRECISION must be bf16, fp16 or fp32, got '${PRECISION}'" >&2; return 2 ;;
  esac
}

# A compact JSON object from key/value pairs; true/false/null and numbers stay bare, the rest become strings.
ofa_json() {
  local out="" sep="" key val
  while (($# >= 2)); do
    key=$1 val=$2
    shift 2
    if [[ ! "$val" =~ ^(true|false|null|-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?)$ ]]; then
      val=${val//\\/\\\\}
      val="\"${val//\"/\\\"}\""
    fi
    out+="$sep\"$key\":$val"
    sep=","
  done
  printf '{%s}' "$out"
}

# Run <repo>/<entry point> with the recipe's flags plus the pass-through ones: under torchrun, or directly
# with --dry-run appended in dry-run mode.
ofa_launch() {
  local entry="$REPO_ROOT/$1"
  shift
  local -a cmd
  if [[ "${OFA_DRY_RUN:-0}" == 1 ]]; then
    cmd=("$PYTHON" "$entry" "$@" "${OFA_EXTRA_ARGS[@]}" --dry-run)
  else
    local nproc=${NPROC_PER_NODE:-$(ofa_visible_gpus)}
    ((nproc > 0)) || nproc=1
    # with torchrun --max-restarts, restarted workers of torch 2.14 cannot reach a store shared with the agent
    # (pytorch/pytorch#135712); a store of their own lets a restarted run resume from checkpoint_last.pt
    export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1}
    cmd=("$PYTHON" -m torch.distributed.run --max-restarts="${MAX_RESTARTS:-0}"
      --nnodes="${NNODES:-1}" --nproc_per_node="$nproc" --node_rank="${NODE_RANK:-0}"
      --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}"
      "$entry" "$@" "${OFA_EXTRA_ARGS[@]}")
  fi
  printf 'ofa: %s\n' "$(printf '%q ' "${cmd[@]}")" >&2
  "${cmd[@]}"
}

# train.py with the optimisation recipe every OFA finetuning script shares (spec §7.4): Adam (0.9, 0.999),
# eps 1e-8, weight decay 0.01, linear (polynomial power 1) decay, clip-norm 1.0, fixed validation seed 7,
# fresh optimizer/dataloader/meters after --restore-file.
ofa_train() {
  local precision
  precision=$(ofa_precision_args)
  # shellcheck disable=SC2086  # precision is zero or one word
  ofa_launch train.py "$@" \
    --optimizer=adam --adam-betas="(0.9,0.999)" --adam-eps=1e-08 --weight-decay=0.01 --clip-norm=1.0 \
    --lr-scheduler=polynomial_decay --reset-optimizer --reset-dataloader --reset-meters \
    --num-bins=1000 --fixed-validation-seed=7 --log-interval=10 --num-workers=0 \
    $precision --fp16-scale-window="${OFA_FP16_SCALE_WINDOW:-512}"
}

# evaluate.py; the pass-through arguments still come last.
ofa_evaluate() {
  local precision
  precision=$(ofa_precision_args)
  # shellcheck disable=SC2086
  ofa_launch evaluate.py "$@" --num-workers=0 $precision
}
