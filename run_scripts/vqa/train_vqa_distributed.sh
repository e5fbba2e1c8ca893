#!/usr/bin/env bash
# VQAv2 finetuning of OFA-Large (spec §8, vqa/train_vqa_distributed.sh): 40k updates with 1k warmup,
# answers restricted to the trainval candidate set, EMA weights (0.9999) used for validation, which scores
# every candidate answer (allcand). OFA ran it on 4 nodes x 8 GPUs: set NNODES / NODE_RANK / MASTER_ADDR
# on every node. Global batch = 4 per GPU x update-freq 4 x GPUs.
#   DATA_DIR        vqa TSVs + trainval_ans2label.pkl  (default $DATASET_ROOT/vqa_data)
#   DATA            train,valid TSVs                   (default vqa_train.tsv,vqa_val.tsv; for the pre-shuffled
#                   files give vqa_train_1.tsv,...,vqa_train_10.tsv,vqa_val.tsv: one train file per epoch)
#   ANS2LABEL_FILE  candidate answers                  (default $DATA_DIR/trainval_ans2label.pkl)
#   RESTORE_FILE    initial weights                    (default $CKPT_DIR/ofa_large.pt)
#   SAVE_DIR        output checkpoints                 (default $RUNS_DIR/vqa)
# Usage: [ENV=...] bash train_vqa_distributed.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

DATA_DIR=${DATA_DIR:-$DATASET_ROOT/vqa_data}
DATA=${DATA:-$DATA_DIR/vqa_train.tsv,$DATA_DIR/vqa_val.tsv}
ANS2LABEL_FILE=${ANS2LABEL_FILE:-$DATA_DIR/trainval_ans2label.pkl}
RESTORE_FILE=${RESTORE_FILE:-$CKPT_DIR/ofa_large.pt}
SAVE_DIR=${SAVE_DIR:-$RUNS_DIR/vqa}

ofa_train "$DATA" --task=vqa_gen --arch=ofa_large --criterion=adjust_label_smoothed_cross_entropy \
  --selected-cols=0,5,2,3,4 --bpe-dir="$BPE_DIR" --restore-file="$RESTORE_FILE" --save-dir="$SAVE_DIR" \
  --lr=5e-5 --max-update=40000 --total-num-update=40000 --warmup-updates=1000 \
  --batch-size=4 --update-freq=4 --label-smoothing=0.1 \
  --dropout=0.1 --attention-dropout=0.0 \
  --resnet-drop-path-rate=0.0 --encoder-drop-path-rate=0.2 --decoder-drop-path-rate=0.2 \
  --patch-image-size=480 --max-src-length=80 --max-object-length=30 --max-tgt-length=30 \
  --freeze-encoder-embedding --freeze-decoder-embedding \
  --ans2label-file="$ANS2LABEL_FILE" --add-object --prompt-type=prev_output \
  --val-inference-type=allcand --valid-batch-size=20 \
  --store-ema --ema-fp32 --ema-decay=0.9999 --ema-start-update=0 --uses-ema \
  --best-checkpoint-metric=vqa_score --maximize-best-checkpoint-metric \
  --keep-last-epochs=15 --save-interval=1 --validate-interval=1
