#!/usr/bin/env bash
# train_refcoco.sh on RefCOCO+.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export REFCOCO_DATASET=refcocoplus
exec bash "$OFA_RUN_SCRIPTS/refcoco/train_refcoco.sh" "$@"
