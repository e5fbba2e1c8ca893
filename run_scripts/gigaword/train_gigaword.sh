#!/usr/bin/env bash
# Gigaword headline generation: finetuning of OFA-Large (spec §4.7, §8, gigaword/train_gigaword.sh).
# Text only; 20% of the decoder-input tokens are replaced by random ones (noise_ratio 0.2); validation every
# 2500 updates decodes with beam 6, lenpen 0.7, max_len_b 32, no-repeat 3-grams and keeps the best ROUGE-L F1.
# Global batch = 64 per GPU x update-freq 2 x GPUs (OFA: 4 GPUs, 512 articles per update).
#   DATA_DIR      gigaword TSVs         (default $DATASET_ROOT/gigaword_data)
#   DATA          train,valid TSVs      (default gigaword_train.tsv,gigaword_dev.tsv)
#   RESTORE_FILE  initial weights       (default $CKPT_DIR/ofa_large.pt)
#   SAVE_DIR      output checkpoints    (default $RUNS_DIR/gigaword)
# Usage: [ENV=...] bash train_gigaword.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

DATA_DIR=${DATA_DIR:-$DATASET_ROOT/gigaword_data}
DATA=${DATA:-$DATA_DIR/gigaword_train.tsv,$DATA_DIR/gigaword_dev.tsv}
RESTORE_FILE=${RESTORE_FILE:-$CKPT_DIR/ofa_large.pt}
SAVE_DIR=${SAVE_DIR:-$RUNS_DIR/gigaword}

ofa_train "$DATA" --task=gigaword --arch=ofa_large --criterion=adjust_label_smoothed_cross_entropy \
  --selected-cols=0,1 --bpe-dir="$BPE_DIR" --restore-file="$RESTORE_FILE" --save-dir="$SAVE_DIR" \
  --lr=1e-4 --max-epoch=6 --warmup-ratio=0.06 --batch-size=64 --update-freq=2 --label-smoothing=0.1 \
  --dropout=0.1 --attention-dropout=0.0 \
  --resnet-drop-path-rate=0.0 --encoder-drop-path-rate=0.1 --decoder-drop-path-rate=0.1 \
  --max-src-length=512 --max-tgt-length=64 --noise-ratio=0.2 \
  --eval-rouge --eval-print-samples \
  --eval-args='{"beam":6,"lenpen":0.7,"max_len_b":32,"no_repeat_ngram_size":3}' \
  --best-checkpoint-metric=rougeL_f1 --maximize-best-checkpoint-metric \
  --no-epoch-checkpoints --save-interval=1 --validate-interval=1 \
  --save-interval-updates=2500 --validate-interval-updates=2500
