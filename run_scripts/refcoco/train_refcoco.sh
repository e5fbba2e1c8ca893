#!/usr/bin/env bash
# Visual grounding finetuning of OFA-Large on RefCOCO (spec §8, refcoco/train_refcoco{,plus,g}.sh; the three
# datasets share every hyper-parameter). 512-px images, boxes as 4 <bin> tokens, validation Acc@0.5 with
# beam 5 and exactly 4 generated tokens. Global batch = 4 per GPU x update-freq 8 x GPUs (OFA: 4 GPUs).
#   REFCOCO_DATASET  refcoco | refcocoplus | refcocog  (default refcoco; set by the plus/g wrappers)
#   DATA_DIR         the dataset's TSVs                (default $DATASET_ROOT/${REFCOCO_DATASET}_data)
#   DATA             train,valid TSVs                  (default ${REFCOCO_DATASET}_train.tsv,${REFCOCO_DATASET}_val.tsv)
#   RESTORE_FILE     initial weights                   (default $CKPT_DIR/ofa_large.pt)
#   SAVE_DIR         output checkpoints                (default $RUNS_DIR/$REFCOCO_DATASET)
# Usage: [ENV=...] bash train_refcoco.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

REFCOCO_DATASET=${REFCOCO_DATASET:-refcoco}
DATA_DIR=${DATA_DIR:-$DATASET_ROOT/${REFCOCO_DATASET}_data}
DATA=${DATA:-$DATA_DIR/${REFCOCO_DATASET}_train.tsv,$DATA_DIR/${REFCOCO_DATASET}_val.tsv}
RESTORE_FILE=${RESTORE_FILE:-$CKPT_DIR/ofa_large.pt}
SAVE_DIR=${SAVE_DIR:-$RUNS_DIR/$REFCOCO_DATASET}

ofa_train "$DATA" --task=refcoco --arch=ofa_large --criterion=adjust_label_smoothed_cross_entropy \
  --selected-cols=0,4,2,3 --bpe-dir="$BPE_DIR" --restore-file="$RESTORE_FILE" --save-dir="$SAVE_DIR" \
  --lr=3e-5 --max-epoch=10 --warmup-ratio=0.06 --batch-size=4 --update-freq=8 --label-smoothing=0.1 \
  --dropout=0.1 --attention-dropout=0.0 \
  --resnet-drop-path-rate=0.0 --encoder-drop-path-rate=0.2 --decoder-drop-path-rate=0.2 \
  --patch-image-size=512 --max-src-length=80 --max-tgt-length=20 \
  --eval-acc --eval-args='{"beam":5,"min_len":4,"max_len_a":0,"max_len_b":4}' \
  --best-checkpoint-metric=score --maximize-best-checkpoint-metric \
  --no-epoch-checkpoints --save-interval=1 --validate-interval=1 \
  --save-interval-updates=500 --validate-interval-updates=500
