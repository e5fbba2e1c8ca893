#!/usr/bin/env bash
# VQAv2 evaluation of the finetuned OFA-Large with all-candidate scoring and EMA weights: the setting of the
# paper's numbers (spec §6.2). SPLIT=val reports the VQA score; SPLIT=test writes the EvalAI answers file.
#   SPLIT           val | test                         (default val)
#   DATA_DIR        vqa TSVs + trainval_ans2label.pkl  (default $DATASET_ROOT/vqa_data)
#   DATA            the TSV to evaluate                (default $DATA_DIR/vqa_$SPLIT.tsv)
#   ANS2LABEL_FILE  candidate answers                  (default $DATA_DIR/trainval_ans2label.pkl)
#   CHECKPOINT      finetuned checkpoint               (default $CKPT_DIR/vqa_large_best.pt)
#   RESULT_PATH     predictions folder                 (default $RESULTS_DIR/vqa_${SPLIT}_allcand)
# Usage: [ENV=...] bash evaluate_vqa_allcand.sh [--dry-run] [extra evaluate.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

SPLIT=${SPLIT:-val}
DATA_DIR=${DATA_DIR:-$DATASET_ROOT/vqa_data}
DATA=${DATA:-$DATA_DIR/vqa_$SPLIT.tsv}
ANS2LABEL_FILE=${ANS2LABEL_FILE:-$DATA_DIR/trainval_ans2label.pkl}
CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/vqa_large_best.pt}
RESULT_PATH=${RESULT_PATH:-$RESULTS_DIR/vqa_${SPLIT}_allcand}

ofa_evaluate "$DATA" --path="$CHECKPOINT" --task=vqa_gen --gen-subset="$SPLIT" --results-path="$RESULT_PATH" \
  --batch-size=8 --seed=7 --ema-eval \
  --model-overrides="$(ofa_json data "$DATA" bpe_dir "$BPE_DIR" selected_cols 0,5,2,3,4 \
    ans2label_file "$ANS2LABEL_FILE")"
