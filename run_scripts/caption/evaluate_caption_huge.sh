#!/usr/bin/env bash
# COCO caption evaluation of the finetuned OFA-Huge: evaluate_caption.sh with beam 10, temperature 0.98 and
# length penalty 0.98 (spec §6.2, caption (huge)).
#   CHECKPOINT  finetuned checkpoint  (default $CKPT_DIR/caption_huge_best.pt); other variables as evaluate_caption.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/caption_huge_best.pt}
export BEAM=${BEAM:-10} TEMPERATURE=${TEMPERATURE:-0.98} LENPEN=${LENPEN:-0.98}
exec bash "$OFA_RUN_SCRIPTS/caption/evaluate_caption.sh" "$@"
