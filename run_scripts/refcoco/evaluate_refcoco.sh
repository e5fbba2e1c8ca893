#!/usr/bin/env bash
# Visual grounding evaluation (Acc@0.5) of the finetuned OFA-Large checkpoints on every split of RefCOCO,
# RefCOCO+ (val/testA/testB) and RefCOCOg (val/test): beam 5, exactly 4 tokens (min_len 4, max_len_a 0,
# max_len_b 4), no-repeat 3-grams (spec §4.3, §6.2). One evaluate.py run per dataset and split.
#   DATASETS     which datasets                  (default "refcoco refcocoplus refcocog")
#   SPLITS       which splits of each            (default: val testA testB; refcocog: val test)
#   MODEL_SIZE   checkpoint size in the name     (default large; the _base wrapper sets base)
#   CHECKPOINT   one checkpoint for all runs     (default $CKPT_DIR/<dataset>_${MODEL_SIZE}_best.pt)
#   DATA_ROOT    TSV folders <dataset>_data/     (default $DATASET_ROOT)
#   RESULT_ROOT  predictions go to <dataset>/    (default $RESULTS_DIR)
# Usage: [ENV=...] bash evaluate_refcoco.sh [--dry-run] [extra evaluate.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

MODEL_SIZE=${MODEL_SIZE:-large}
DATA_ROOT=${DATA_ROOT:-$DATASET_ROOT}
RESULT_ROOT=${RESULT_ROOT:-$RESULTS_DIR}

for dataset in ${DATASETS:-refcoco refcocoplus refcocog}; do
  case "$dataset" in
    refcoco | refcocoplus) splits=${SPLITS:-val testA testB} ;;
    refcocog) splits=${SPLITS:-val test} ;;
    *) echo "evaluate_refcoco.sh: unknown dataset '$dataset' (refcoco, refcocoplus, refcocog)" >&2 && exit 2 ;;
  esac
  for split in $splits; do
    data=$DATA_ROOT/${dataset}_data/${dataset}_$split.tsv
    ofa_evaluate "$data" --path="${CHECKPOINT:-$CKPT_DIR/${dataset}_${MODEL_SIZE}_best.pt}" --task=refcoco \
      --gen-subset="${dataset}_$split" --results-path="$RESULT_ROOT/$dataset" \
      --batch-size=16 --seed=7 --beam=5 --min-len=4 --max-len-a=0 --max-len-b=4 --no-repeat-ngram-size=3 \
      --model-overrides="$(ofa_json data "$data" bpe_dir "$BPE_DIR" selected_cols 0,4,2,3)"
  done
done
