#!/usr/bin/env bash
# Gigaword test-set evaluation of the finetuned OFA-Large: beam 6, lenpen 0.7, max_len_b 32, no-repeat 3-grams
# (spec §4.7, §6.2). evaluate.py scores the hypotheses itself (stemmed ROUGE-1/2/L F1 and recall, into
# <split>_metrics.json), so OFA's separate eval_rouge.py pass is not needed.
#   SPLIT        split name                (default test)
#   DATA_DIR     gigaword TSVs             (default $DATASET_ROOT/gigaword_data)
#   DATA         the TSV to evaluate       (default $DATA_DIR/gigaword_$SPLIT.tsv)
#   CHECKPOINT   finetuned checkpoint      (default $CKPT_DIR/gigaword_large_best.pt)
#   RESULT_PATH  predictions folder        (default $RESULTS_DIR/gigaword)
# Usage: [ENV=...] bash evaluate_gigaword.sh [--dry-run] [extra evaluate.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

SPLIT=${SPLIT:-test}
DATA_DIR=${DATA_DIR:-$DATASET_ROOT/gigaword_data}
DATA=${DATA:-$DATA_DIR/gigaword_$SPLIT.tsv}
CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/gigaword_large_best.pt}
RESULT_PATH=${RESULT_PATH:-$RESULTS_DIR/gigaword}

ofa_evaluate "$DATA" --path="$CHECKPOINT" --task=gigaword --gen-subset="$SPLIT" --results-path="$RESULT_PATH" \
  --batch-size=32 --seed=7 --beam=6 --lenpen=0.7 --max-len-b=32 --no-repeat-ngram-size=3 \
  --model-overrides="$(ofa_json data "$DATA" bpe_dir "$BPE_DIR" selected_cols 0,1)"
