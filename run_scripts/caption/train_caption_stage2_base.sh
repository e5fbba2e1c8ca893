#!/usr/bin/env bash
# COCO captioning, stage 2: CIDEr optimisation (SCST) of the stage-1 OFA-Base checkpoint
# (spec §8, caption/train_caption_stage2_base.sh). Unlike the large recipe, OFA's base recipe keeps the
# default end learning rate (0). bf16 instead of OFA's --memory-efficient-fp16 (see train_caption_stage2.sh).
# Global batch = 2 images per GPU x update-freq 4 x GPUs (OFA: 8 GPUs).
#   DATA_DIR      caption TSVs + cider_cached_tokens/  (default $DATASET_ROOT/caption_data)
#   DATA          train,valid TSVs                     (default caption_stage2_train.tsv,caption_val.tsv)
#   RESTORE_FILE  stage-1 checkpoint                   (default $CKPT_DIR/caption_stage1_base_best.pt)
#   SAVE_DIR      output checkpoints                   (default $RUNS_DIR/caption_stage2_base)
# Usage: [ENV=...] bash train_caption_stage2_base.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

DATA_DIR=${DATA_DIR:-$DATASET_ROOT/caption_data}
DATA=${DATA:-$DATA_DIR/caption_stage2_train.tsv,$DATA_DIR/caption_val.tsv}
RESTORE_FILE=${RESTORE_FILE:-$CKPT_DIR/caption_stage1_base_best.pt}
SAVE_DIR=${SAVE_DIR:-$RUNS_DIR/caption_stage2_base}

ofa_train "$DATA" --task=caption --arch=ofa_base --criterion=scst_reward_criterion \
  --selected-cols=1,4,2 --bpe-dir="$BPE_DIR" --restore-file="$RESTORE_FILE" --save-dir="$SAVE_DIR" \
  --lr=1e-5 --max-epoch=3 --warmup-ratio=0.06 --batch-size=2 --update-freq=4 \
  --dropout=0.0 --attention-dropout=0.0 \
  --resnet-drop-path-rate=0.0 --encoder-drop-path-rate=0.0 --decoder-drop-path-rate=0.0 \
  --patch-image-size=480 --max-src-length=80 --max-tgt-length=20 \
  --freeze-encoder-embedding --freeze-decoder-embedding \
  --scst --scst-cider-cached-tokens="$DATA_DIR/cider_cached_tokens/coco-train-words.p" \
  --scst-args='{"beam":5,"max_len_b":16,"no_repeat_ngram_size":3}' \
  --eval-cider --eval-cider-cached-tokens="$DATA_DIR/cider_cached_tokens/coco-valid-words.p" \
  --eval-args='{"beam":5,"max_len_b":16,"no_repeat_ngram_size":3}' \
  --best-checkpoint-metric=cider --maximize-best-checkpoint-metric \
  --no-epoch-checkpoints --save-interval=1 --validate-interval=1 \
  --save-interval-updates=500 --validate-interval-updates=500
