#!/usr/bin/env bash
# Continued pretraining of OFA-Base on one's own data (spec §4.9, §8, pretraining/pretrain_ofa_base.sh).
# Global batch = 4 rows per GPU x GPUs (OFA's example: 1 GPU), each row with its extra examples; the settings
# and the choice of starting point are in pretraining_common.sh.
#   DATA_DIR        pretraining data  (default $DATASET_ROOT/pretrain_data)
#   DATA            image-text TSV(s) (default vision_language_examples.tsv)
#   TEXT_DATA, IMAGE_DATA, DETECTION_DATA, NEG_SAMPLE_DIR   (default the files of DATA_DIR)
#   RESTORE_FILE    released weights  (default $CKPT_DIR/ofa_base.pt; from scratch when absent)
#   SAVE_DIR        checkpoints       (default $RUNS_DIR/pretrain_ofa_base; resumed when it holds checkpoint_last.pt)
# Usage: [ENV=...] bash pretrain_ofa_base.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/pretraining_common.sh"
ofa_parse_args "$@"

ofa_pretrain ofa_base
