#!/usr/bin/env bash
# SNLI-VE finetuning of OFA-Base (spec §8, snli_ve/train_snli_ve_base.sh): 5 epochs, lr 5e-5, drop-path 0.1,
# otherwise as train_snli_ve.sh. Global batch = 4 per GPU x update-freq 8 x GPUs (OFA: 8 GPUs).
#   DATA_DIR      SNLI-VE TSVs          (default $DATASET_ROOT/snli_ve_data)
#   DATA          train,valid TSVs      (default snli_ve_train.tsv,snli_ve_dev.tsv)
#   RESTORE_FILE  initial weights       (default $CKPT_DIR/ofa_base.pt)
#   SAVE_DIR      output checkpoints    (default $RUNS_DIR/snli_ve_base)
# Usage: [ENV=...] bash train_snli_ve_base.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

DATA_DIR=${DATA_DIR:-$DATASET_ROOT/snli_ve_data}
DATA=${DATA:-$DATA_DIR/snli_ve_train.tsv,$DATA_DIR/snli_ve_dev.tsv}
RESTORE_FILE=${RESTORE_FILE:-$CKPT_DIR/ofa_base.pt}
SAVE_DIR=${SAVE_DIR:-$RUNS_DIR/snli_ve_base}

ofa_train "$DATA" --task=snli_ve --arch=ofa_base --criterion=adjust_label_smoothed_cross_entropy \
  --selected-cols=0,2,3,4,5 --bpe-dir="$BPE_DIR" --restore-file="$RESTORE_FILE" --save-dir="$SAVE_DIR" \
  --lr=5e-5 --max-epoch=5 --warmup-ratio=0.06 --batch-size=4 --update-freq=8 --label-smoothing=0.0 \
  --dropout=0.1 --attention-dropout=0.0 \
  --resnet-drop-path-rate=0.0 --encoder-drop-path-rate=0.1 --decoder-drop-path-rate=0.1 \
  --patch-image-size=480 --max-src-length=80 --max-tgt-length=20 \
  --add-caption --prompt-type=prev_output \
  --best-checkpoint-metric=snli_score --maximize-best-checkpoint-metric \
  --save-interval=1 --validate-interval=1 --save-interval-updates=500 --validate-interval-updates=500
