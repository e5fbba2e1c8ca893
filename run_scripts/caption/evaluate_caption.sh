#!/usr/bin/env bash
# COCO caption (Karpathy test split) evaluation of the finetuned OFA-Large: beam 5, max_len_b 16,
# no-repeat 3-grams, length-normalised scores (spec §6.2), then coco_eval.py for BLEU-4/METEOR/ROUGE-L/
# CIDEr/SPICE with the COCO caption toolkit (pycocoevalcap; needs Java).
#   SPLIT        split name (default test)
#   DATA_DIR     caption TSVs + COCO-format references   (default $DATASET_ROOT/caption_data)
#   DATA         the TSV to evaluate                     (default $DATA_DIR/caption_$SPLIT.tsv)
#   COCO_REFS    references in COCO format               (default $DATA_DIR/${SPLIT}_caption_coco_format.json)
#   CHECKPOINT   finetuned checkpoint                    (default $CKPT_DIR/caption_large_best.pt)
#   RESULT_PATH  predictions folder                      (default $RESULTS_DIR/caption)
#   BEAM, MAX_LEN_B, NO_REPEAT_NGRAM_SIZE, LENPEN, TEMPERATURE   generation (defaults 5, 16, 3, 1.0, 1.0)
# Usage: [ENV=...] bash evaluate_caption.sh [--dry-run] [extra evaluate.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

SPLIT=${SPLIT:-test}
DATA_DIR=${DATA_DIR:-$DATASET_ROOT/caption_data}
DATA=${DATA:-$DATA_DIR/caption_$SPLIT.tsv}
COCO_REFS=${COCO_REFS:-$DATA_DIR/${SPLIT}_caption_coco_format.json}
CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/caption_large_best.pt}
RESULT_PATH=${RESULT_PATH:-$RESULTS_DIR/caption}

ofa_evaluate "$DATA" --path="$CHECKPOINT" --task=caption --gen-subset="$SPLIT" --results-path="$RESULT_PATH" \
  --batch-size=16 --seed=7 --beam="${BEAM:-5}" --max-len-b="${MAX_LEN_B:-16}" \
  --no-repeat-ngram-size="${NO_REPEAT_NGRAM_SIZE:-3}" --lenpen="${LENPEN:-1.0}" --temperature="${TEMPERATURE:-1.0}" \
  --model-overrides="$(ofa_json data "$DATA" bpe_dir "$BPE_DIR" eval_cider false selected_cols 1,4,2)"

if [[ "$OFA_DRY_RUN" == 0 && "${NODE_RANK:-0}" == 0 ]]; then  # score once, on the first machine
  "$PYTHON" "$OFA_RUN_SCRIPTS/caption/coco_eval.py" "$RESULT_PATH/${SPLIT}_predict.json" "$COCO_REFS" \
    --out "$RESULT_PATH/${SPLIT}_coco_metrics.json"
fi
