#!/usr/bin/env bash
# train_refcoco_base.sh on RefCOCOg, 12 epochs (spec §8: refcocog_base).
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export REFCOCO_DATASET=refcocog MAX_EPOCH=${MAX_EPOCH:-12}
exec bash "$OFA_RUN_SCRIPTS/refcoco/train_refcoco_base.sh" "$@"
