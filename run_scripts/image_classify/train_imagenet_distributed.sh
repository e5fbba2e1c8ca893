#!/usr/bin/env bash
# ImageNet-1K classification as generation: finetuning of OFA-Large (spec §4.6, §8,
# image_classify/train_imagenet_distributed.sh). 160k updates with 1k warmup, 480-px images with OFA's timm +
# RandomAugment training transform and ImageNet mean/std, class names as targets, validation by scoring all 1000
# class names (in chunks of 20) after every epoch. OFA ran it on 2 nodes x 8 GPUs: set NNODES / NODE_RANK /
# MASTER_ADDR on every node. Global batch = 4 per GPU x update-freq 4 x GPUs.
#   DATA_DIR        ImageNet TSVs + class2label_new.pkl  (default $DATASET_ROOT/imagenet_1k_data)
#   DATA            train,valid TSVs                     (default imagenet_1k_train.tsv,
#                   imagenet_1k_val_subset.tsv; for the pre-shuffled files give imagenet_1k_train_1.tsv,...,
#                   imagenet_1k_train_10.tsv and the valid file last: one train file per epoch)
#   ANS2LABEL_FILE  class names                          (default $DATA_DIR/class2label_new.pkl)
#   RESTORE_FILE    initial weights                      (default $CKPT_DIR/ofa_large.pt)
#   SAVE_DIR        output checkpoints                   (default $RUNS_DIR/imagenet_1k)
# Usage: [ENV=...] bash train_imagenet_distributed.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

DATA_DIR=${DATA_DIR:-$DATASET_ROOT/imagenet_1k_data}
DATA=${DATA:-$DATA_DIR/imagenet_1k_train.tsv,$DATA_DIR/imagenet_1k_val_subset.tsv}
ANS2LABEL_FILE=${ANS2LABEL_FILE:-$DATA_DIR/class2label_new.pkl}
RESTORE_FILE=${RESTORE_FILE:-$CKPT_DIR/ofa_large.pt}
SAVE_DIR=${SAVE_DIR:-$RUNS_DIR/imagenet_1k}

ofa_train "$DATA" --task=image_classify --arch=ofa_large --criterion=adjust_label_smoothed_cross_entropy \
  --selected-cols=0,2 --bpe-dir="$BPE_DIR" --restore-file="$RESTORE_FILE" --save-dir="$SAVE_DIR" \
  --lr=5e-5 --max-update=160000 --total-num-update=160000 --warmup-updates=1000 \
  --batch-size=4 --update-freq=4 --label-smoothing=0.1 \
  --dropout=0.1 --attention-dropout=0.0 \
  --resnet-drop-path-rate=0.0 --encoder-drop-path-rate=0.1 --decoder-drop-path-rate=0.1 \
  --patch-image-size=480 --imagenet-default-mean-and-std --max-src-length=128 --max-tgt-length=30 \
  --freeze-encoder-embedding --freeze-decoder-embedding \
  --ans2label-file="$ANS2LABEL_FILE" --valid-batch-size=20 \
  --best-checkpoint-metric=score --maximize-best-checkpoint-metric \
  --keep-last-epochs=15 --save-interval=1 --validate-interval=1
