#!/usr/bin/env bash
# SNLI-VE evaluation (accuracy) of the finetuned OFA-Large by scoring the 3 answers (spec §4.4, §6.2).
#   SPLIT        dev | test                     (default dev)
#   DATA_DIR     SNLI-VE TSVs                   (default $DATASET_ROOT/snli_ve_data)
#   DATA         the TSV to evaluate            (default $DATA_DIR/snli_ve_$SPLIT.tsv)
#   CHECKPOINT   finetuned checkpoint           (default $CKPT_DIR/snli_ve_large_best.pt)
#   RESULT_PATH  predictions folder             (default $RESULTS_DIR/snli_ve)
# Usage: [ENV=...] bash evaluate_snli_ve.sh [--dry-run] [extra evaluate.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

SPLIT=${SPLIT:-dev}
DATA_DIR=${DATA_DIR:-$DATASET_ROOT/snli_ve_data}
DATA=${DATA:-$DATA_DIR/snli_ve_$SPLIT.tsv}
CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/snli_ve_large_best.pt}
RESULT_PATH=${RESULT_PATH:-$RESULTS_DIR/snli_ve}

ofa_evaluate "$DATA" --path="$CHECKPOINT" --task=snli_ve --gen-subset="$SPLIT" --results-path="$RESULT_PATH" \
  --batch-size=8 --seed=7 \
  --model-overrides="$(ofa_json data "$DATA" bpe_dir "$BPE_DIR" selected_cols 0,2,3,4,5)"
