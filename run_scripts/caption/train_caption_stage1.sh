#!/usr/bin/env bash
# COCO captioning, stage 1: cross-entropy finetuning of OFA-Large (spec §8, caption/train_caption_stage1.sh).
# Global batch = 8 per GPU x update-freq 4 x GPUs (OFA: 4 GPUs, 128 captions per update).
#   DATA_DIR      caption TSVs + cider_cached_tokens/  (default $DATASET_ROOT/caption_data)
#   DATA          train,valid TSVs                     (default caption_stage1_train.tsv,caption_val.tsv)
#   RESTORE_FILE  initial weights                      (default $CKPT_DIR/ofa_large.pt)
#   SAVE_DIR      output checkpoints                   (default $RUNS_DIR/caption_stage1)
# Usage: [ENV=...] bash train_caption_stage1.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

DATA_DIR=${DATA_DIR:-$DATASET_ROOT/caption_data}
DATA=${DATA:-$DATA_DIR/caption_stage1_train.tsv,$DATA_DIR/caption_val.tsv}
RESTORE_FILE=${RESTORE_FILE:-$CKPT_DIR/ofa_large.pt}
SAVE_DIR=${SAVE_DIR:-$RUNS_DIR/caption_stage1}

ofa_train "$DATA" --task=caption --arch=ofa_large --criterion=adjust_label_smoothed_cross_entropy \
  --selected-cols=0,4,2 --bpe-dir="$BPE_DIR" --restore-file="$RESTORE_FILE" --save-dir="$SAVE_DIR" \
  --lr=1e-5 --max-epoch=2 --warmup-ratio=0.06 --batch-size=8 --update-freq=4 \
  --label-smoothing=0.1 --drop-worst-ratio=0.2 --drop-worst-after=2500 \
  --dropout=0.1 --attention-dropout=0.0 \
  --resnet-drop-path-rate=0.0 --encoder-drop-path-rate=0.1 --decoder-drop-path-rate=0.1 \
  --patch-image-size=480 --max-src-length=80 --max-tgt-length=20 \
  --freeze-encoder-embedding --freeze-decoder-embedding \
  --eval-cider --eval-cider-cached-tokens="$DATA_DIR/cider_cached_tokens/coco-valid-words.p" \
  --eval-args='{"beam":5,"max_len_b":16,"no_repeat_ngram_size":3}' \
  --best-checkpoint-metric=cider --maximize-best-checkpoint-metric \
  --no-epoch-checkpoints --save-interval=1 --validate-interval=1 \
  --save-interval-updates=500 --validate-interval-updates=500
