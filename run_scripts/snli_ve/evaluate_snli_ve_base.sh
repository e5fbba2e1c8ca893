#!/usr/bin/env bash
# SNLI-VE evaluation of the finetuned OFA-Base: evaluate_snli_ve.sh with the base checkpoint.
#   CHECKPOINT  finetuned checkpoint  (default $CKPT_DIR/snli_ve_base_best.pt); other variables as evaluate_snli_ve.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/snli_ve_base_best.pt}
exec bash "$OFA_RUN_SCRIPTS/snli_ve/evaluate_snli_ve.sh" "$@"
