#!/usr/bin/env bash
# COCO caption evaluation of the finetuned OFA-Base: evaluate_caption.sh with the base checkpoint.
#   CHECKPOINT  finetuned checkpoint  (default $CKPT_DIR/caption_base_best.pt); other variables as evaluate_caption.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/caption_base_best.pt}
exec bash "$OFA_RUN_SCRIPTS/caption/evaluate_caption.sh" "$@"
