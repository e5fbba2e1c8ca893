#!/usr/bin/env bash
# Visual grounding evaluation of the finetuned OFA-Base checkpoints (<dataset>_base_best.pt):
# evaluate_refcoco.sh with MODEL_SIZE=base; the same variables apply.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export MODEL_SIZE=base
exec bash "$OFA_RUN_SCRIPTS/refcoco/evaluate_refcoco.sh" "$@"
