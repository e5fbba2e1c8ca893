#!/usr/bin/env bash
# SST-2 finetuning of OFA-Large (spec §4.5, §8, glue/train_sst2.sh):
# is the sentiment positive or negative?.
# Runs OFA's grid max_epoch {5,7,10} x lr {1e-4,7e-5,6e-5,5e-5,3e-5} x update_freq {2,1}, one train.py run
# per point; the settings every GLUE recipe shares are in glue_common.sh.
# Global batch = 16 per GPU x update-freq x GPUs (OFA: 4 GPUs). Dev validation every 50 updates and at
# each epoch end; best-checkpoint metric acc.
#   MAX_EPOCH, LR, UPDATE_FREQ  one value each (or a space-separated subset) instead of that axis of the grid
#   DATA_DIR      GLUE TSVs                 (default $DATASET_ROOT/glue_data)
#   DATA          train,valid TSVs          (default sst2_train.tsv,sst2_dev.tsv)
#   RESTORE_FILE  initial weights           (default $CKPT_DIR/ofa_large.pt)
#   SAVE_DIR      folder of the grid's runs (default $RUNS_DIR/sst2; one <max_epoch>_<lr>_<update_freq>/ each)
# Usage: [ENV=...] bash train_sst2.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/glue_common.sh"
ofa_parse_args "$@"

glue_grid sst2 "2 1" --selected-cols=0,1 --batch-size=16 \
  --best-checkpoint-metric=acc --validate-interval-updates=50
