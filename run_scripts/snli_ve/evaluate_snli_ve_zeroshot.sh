#!/usr/bin/env bash
# Zero-shot SNLI-VE with the pretrained OFA-Base (spec §4.4): 384-px images (the base pretraining resolution),
# prompt_type prev_output, all-candidate scoring of yes/no/maybe. A pretrained checkpoint stores no task
# settings, so they come from the flags and overrides below.
#   DATA         the TSV to evaluate            (default $DATASET_ROOT/snli_ve_data/snli_ve_dev.tsv)
#   CHECKPOINT   pretrained checkpoint          (default $CKPT_DIR/ofa_base.pt)
#   RESULT_PATH  predictions folder             (default $RESULTS_DIR/snli_ve)
# Usage: [ENV=...] bash evaluate_snli_ve_zeroshot.sh [--dry-run] [extra evaluate.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

DATA=${DATA:-$DATASET_ROOT/snli_ve_data/snli_ve_dev.tsv}
CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/ofa_base.pt}
RESULT_PATH=${RESULT_PATH:-$RESULTS_DIR/snli_ve}

ofa_evaluate "$DATA" --path="$CHECKPOINT" --task=snli_ve --gen-subset=snli_ve_zeroshot --results-path="$RESULT_PATH" \
  --selected-cols=0,2,3,4,5 --bpe-dir="$BPE_DIR" --patch-image-size=384 \
  --batch-size=16 --seed=7 --zero-shot \
  --model-overrides="$(ofa_json prompt_type prev_output max_src_length 80)"
