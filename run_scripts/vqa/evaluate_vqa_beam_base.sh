#!/usr/bin/env bash
# VQAv2 beam-search evaluation of the finetuned OFA-Base: evaluate_vqa_beam.sh with the base checkpoint.
#   CHECKPOINT  finetuned checkpoint  (default $CKPT_DIR/vqa_base_best.pt); other variables as evaluate_vqa_beam.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/vqa_base_best.pt}
exec bash "$OFA_RUN_SCRIPTS/vqa/evaluate_vqa_beam.sh" "$@"
