#!/usr/bin/env bash
# Visual grounding finetuning of OFA-Base on RefCOCOg (spec §8, refcoco/train_refcocog_base.sh):
# train_refcoco_base.sh on the refcocog_data/ TSVs with 12 epochs instead of 10 (spec §8);
# its variables and usage apply.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export REFCOCO_DATASET=refcocog MAX_EPOCH=${MAX_EPOCH:-12}
exec bash "$OFA_RUN_SCRIPTS/refcoco/train_refcoco_base.sh" "$@"
