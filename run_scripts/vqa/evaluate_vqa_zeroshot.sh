#!/usr/bin/env bash
# Zero-shot VQAv2 with the pretrained OFA-Large (spec §4.2, §6.2): open-ended beam search (beam 20,
# unnormalised scores), no answer trie, prompt_type none (the answer follows bos directly), 480-px images.
# A pretrained checkpoint stores no task settings, so they all come from the flags and overrides below.
#   SPLIT        val | test                (default val)
#   DATA_DIR     vqa TSVs                  (default $DATASET_ROOT/vqa_data)
#   DATA         the TSV to evaluate       (default $DATA_DIR/vqa_$SPLIT.tsv)
#   CHECKPOINT   pretrained checkpoint     (default $CKPT_DIR/ofa_large.pt)
#   RESULT_PATH  predictions folder        (default $RESULTS_DIR/vqa_${SPLIT}_zeroshot)
# Usage: [ENV=...] bash evaluate_vqa_zeroshot.sh [--dry-run] [extra evaluate.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

SPLIT=${SPLIT:-val}
DATA_DIR=${DATA_DIR:-$DATASET_ROOT/vqa_data}
DATA=${DATA:-$DATA_DIR/vqa_$SPLIT.tsv}
CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/ofa_large.pt}
RESULT_PATH=${RESULT_PATH:-$RESULTS_DIR/vqa_${SPLIT}_zeroshot}

ofa_evaluate "$DATA" --path="$CHECKPOINT" --task=vqa_gen --gen-subset="$SPLIT" --results-path="$RESULT_PATH" \
  --selected-cols=0,5,2,3,4 --bpe-dir="$BPE_DIR" --patch-image-size=480 \
  --batch-size=8 --seed=7 --zero-shot --beam=20 --unnormalized --temperature=1.0 \
  --model-overrides="$(ofa_json prompt_type none)"
