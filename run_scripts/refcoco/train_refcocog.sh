#!/usr/bin/env bash
# Visual grounding finetuning of OFA-Large on RefCOCOg (spec §8, refcoco/train_refcocog.sh):
# train_refcoco.sh on the refcocog_data/ TSVs with the same hyper-parameters; its variables and usage apply.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export REFCOCO_DATASET=refcocog
exec bash "$OFA_RUN_SCRIPTS/refcoco/train_refcoco.sh" "$@"
