#!/usr/bin/env bash
# VQAv2 evaluation of the finetuned OFA-Large with beam search (beam 5, unnormalised scores, temperature 1)
# constrained to the candidate-answer trie, the question as decoder prefix, EMA weights (spec §6.2).
#   SPLIT           val | test                         (default val)
#   DATA_DIR        vqa TSVs + trainval_ans2label.pkl  (default $DATASET_ROOT/vqa_data)
#   DATA            the TSV to evaluate                (default $DATA_DIR/vqa_$SPLIT.tsv)
#   ANS2LABEL_FILE  candidate answers                  (default $DATA_DIR/trainval_ans2label.pkl)
#   CHECKPOINT      finetuned checkpoint               (default $CKPT_DIR/vqa_large_best.pt)
#   RESULT_PATH     predictions folder                 (default $RESULTS_DIR/vqa_${SPLIT}_beam)
# Usage: [ENV=...] bash evaluate_vqa_beam.sh [--dry-run] [extra evaluate.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

SPLIT=${SPLIT:-val}
DATA_DIR=${DATA_DIR:-$DATASET_ROOT/vqa_data}
DATA=${DATA:-$DATA_DIR/vqa_$SPLIT.tsv}
ANS2LABEL_FILE=${ANS2LABEL_FILE:-$DATA_DIR/trainval_ans2label.pkl}
CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/vqa_large_best.pt}
RESULT_PATH=${RESULT_PATH:-$RESULTS_DIR/vqa_${SPLIT}_beam}

ofa_evaluate "$DATA" --path="$CHECKPOINT" --task=vqa_gen --gen-subset="$SPLIT" --results-path="$RESULT_PATH" \
  --batch-size=16 --seed=7 --ema-eval --beam-search-vqa-eval --beam=5 --unnormalized --temperature=1.0 \
  --model-overrides="$(ofa_json data "$DATA" bpe_dir "$BPE_DIR" selected_cols 0,5,2,3,4 \
    ans2label_file "$ANS2LABEL_FILE")"
