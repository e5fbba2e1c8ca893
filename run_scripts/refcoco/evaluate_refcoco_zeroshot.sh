#!/usr/bin/env bash
# Zero-shot grounding with the pretrained OFA-Large on RefCOCO val (spec §4.3): 480-px images (the
# pretraining resolution; boxes are still quantised against max_image_size 512), the finetuned recipe's
# decoding settings. A pretrained checkpoint stores no task settings, so they come from the flags.
#   SPLIT        split of RefCOCO                 (default val)
#   DATA         the TSV to evaluate              (default $DATASET_ROOT/refcoco_data/refcoco_$SPLIT.tsv)
#   CHECKPOINT   pretrained checkpoint            (default $CKPT_DIR/ofa_large.pt)
#   RESULT_PATH  predictions folder               (default $RESULTS_DIR/refcoco)
# Usage: [ENV=...] bash evaluate_refcoco_zeroshot.sh [--dry-run] [extra evaluate.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

SPLIT=${SPLIT:-val}
DATA=${DATA:-$DATASET_ROOT/refcoco_data/refcoco_$SPLIT.tsv}
CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/ofa_large.pt}
RESULT_PATH=${RESULT_PATH:-$RESULTS_DIR/refcoco}

ofa_evaluate "$DATA" --path="$CHECKPOINT" --task=refcoco --gen-subset="refcoco_$SPLIT" --results-path="$RESULT_PATH" \
  --selected-cols=0,4,2,3 --bpe-dir="$BPE_DIR" --patch-image-size=480 \
  --batch-size=16 --seed=7 --zero-shot --beam=5 --min-len=4 --max-len-a=0 --max-len-b=4 --no-repeat-ngram-size=3
