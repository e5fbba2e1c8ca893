#!/usr/bin/env bash
# ImageNet-1K validation-set evaluation of the finetuned OFA-Large: every one of the 1000 class names is scored
# by its summed log-probability under the class-name trie, top-1 accuracy is the score (spec §4.6, §6.2).
# The checkpoint carries the training settings (480 px, ImageNet mean/std).
#   SPLIT           split name                           (default val)
#   DATA_DIR        ImageNet TSVs + class2label_new.pkl  (default $DATASET_ROOT/imagenet_1k_data)
#   DATA            the TSV to evaluate                  (default $DATA_DIR/imagenet_1k_$SPLIT.tsv)
#   ANS2LABEL_FILE  class names                          (default $DATA_DIR/class2label_new.pkl)
#   CHECKPOINT      finetuned checkpoint                 (default $CKPT_DIR/imagenet_1k_large_best.pt)
#   RESULT_PATH     predictions folder                   (default $RESULTS_DIR/imagenet_1k_$SPLIT)
# Usage: [ENV=...] bash evaluate_imagenet.sh [--dry-run] [extra evaluate.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

SPLIT=${SPLIT:-val}
DATA_DIR=${DATA_DIR:-$DATASET_ROOT/imagenet_1k_data}
DATA=${DATA:-$DATA_DIR/imagenet_1k_$SPLIT.tsv}
ANS2LABEL_FILE=${ANS2LABEL_FILE:-$DATA_DIR/class2label_new.pkl}
CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/imagenet_1k_large_best.pt}
RESULT_PATH=${RESULT_PATH:-$RESULTS_DIR/imagenet_1k_$SPLIT}

ofa_evaluate "$DATA" --path="$CHECKPOINT" --task=image_classify --gen-subset="$SPLIT" \
  --results-path="$RESULT_PATH" --batch-size=8 --seed=7 \
  --model-overrides="$(ofa_json data "$DATA" bpe_dir "$BPE_DIR" selected_cols 0,2 \
    ans2label_file "$ANS2LABEL_FILE")"
