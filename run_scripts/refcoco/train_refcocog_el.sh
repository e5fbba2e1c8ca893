#!/usr/bin/env bash
# Grounding finetuning of OFA-Large with the encouraging loss on RefCOCOg (spec §8, refcoco/train_refcocog_el.sh):
# train_refcoco_el.sh on the refcocog_data/ TSVs with the same hyper-parameters; its variables and usage apply.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export REFCOCO_DATASET=refcocog
exec bash "$OFA_RUN_SCRIPTS/refcoco/train_refcoco_el.sh" "$@"
