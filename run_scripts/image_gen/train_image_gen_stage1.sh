#!/usr/bin/env bash
# Text-to-image generation, stage 1: OFA-Large learns to write the VQGAN codes of COCO images from their captions
# (cross-entropy, no label smoothing; spec §8, image_gen/train_image_gen_stage1_distributed.sh).
# Global batch = 4 per GPU x update-freq 4 x GPUs (OFA: 4 machines x 8 GPUs).
#   DATA_DIR, DATA, VQGAN_DIR, CLIP_MODEL_PATH, GEN_IMAGES_PATH   see image_gen_common.sh
#   RESTORE_FILE  starting weights   (default $CKPT_DIR/ofa_large.pt)
#   SAVE_DIR      checkpoints        (default $RUNS_DIR/image_gen_stage1)
# Make the TSVs with: python -m data.image_codes --layout image_gen ... (the original's generate_code.py step).
# Usage: [ENV=...] bash train_image_gen_stage1.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/image_gen_common.sh"
ofa_parse_args "$@"

ofa_image_gen_train 1 --criterion=adjust_label_smoothed_cross_entropy --label-smoothing=0.0 \
  --restore-file="${RESTORE_FILE:-$CKPT_DIR/ofa_large.pt}" --save-dir="${SAVE_DIR:-$RUNS_DIR/image_gen_stage1}" \
  --lr=1e-3 --max-update=40000 --total-num-update=40000 --warmup-updates=2000 --batch-size=4 --update-freq=4 \
  --encoder-drop-path-rate=0.1 --decoder-drop-path-rate=0.1 --dropout=0.1 --attention-dropout=0.0 \
  --save-interval=3 --validate-interval=3
