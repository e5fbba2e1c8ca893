#!/usr/bin/env bash
# train_refcoco.sh on RefCOCOg.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export REFCOCO_DATASET=refcocog
exec bash "$OFA_RUN_SCRIPTS/refcoco/train_refcoco.sh" "$@"
