#!/usr/bin/env bash
# Text-to-image generation, stage 2: CLIP-reward SCST of the stage-1 model (5 sampled images per caption, reward
# 2.5 x CLIP cosine with a leave-one-out baseline; frozen ResNet; spec §8 and §5.4,
# image_gen/train_image_gen_stage2_distributed.sh). Global batch = 1 per GPU x GPUs (OFA: 4 machines x 8 GPUs).
#   DATA_DIR, DATA, VQGAN_DIR, CLIP_MODEL_PATH, GEN_IMAGES_PATH   see image_gen_common.sh
#   RESTORE_FILE  stage-1 checkpoint (default $RUNS_DIR/image_gen_stage1/checkpoint_last.pt)
#   SAVE_DIR      checkpoints        (default $RUNS_DIR/image_gen_stage2)
# Usage: [ENV=...] bash train_image_gen_stage2.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/image_gen_common.sh"
ofa_parse_args "$@"

ofa_image_gen_train 2 --criterion=clip_scst_reward_criterion \
  --restore-file="${RESTORE_FILE:-$RUNS_DIR/image_gen_stage1/checkpoint_last.pt}" \
  --save-dir="${SAVE_DIR:-$RUNS_DIR/image_gen_stage2}" \
  --lr=1e-6 --max-update=5000 --total-num-update=5000 --warmup-updates=0 --batch-size=1 --update-freq=1 \
  --encoder-drop-path-rate=0.0 --decoder-drop-path-rate=0.0 --dropout=0.0 --attention-dropout=0.0 \
  --freeze-resnet --scst --scst-args="{\"beam\":5,$IMAGE_GEN_SAMPLING}" \
  --save-interval=1 --validate-interval=1 --save-interval-updates=200 --validate-interval-updates=200
