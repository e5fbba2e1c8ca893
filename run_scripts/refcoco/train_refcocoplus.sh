#!/usr/bin/env bash
# Visual grounding finetuning of OFA-Large on RefCOCO+ (spec §8, refcoco/train_refcocoplus.sh):
# train_refcoco.sh on the refcocoplus_data/ TSVs with the same hyper-parameters; its variables and usage apply.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export REFCOCO_DATASET=refcocoplus
exec bash "$OFA_RUN_SCRIPTS/refcoco/train_refcoco.sh" "$@"
