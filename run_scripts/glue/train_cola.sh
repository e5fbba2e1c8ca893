#!/usr/bin/env bash
# CoLA finetuning of OFA-Large (spec §4.5, §8, glue/train_cola.sh):
# is the sentence grammatical? (yes/no); Matthews correlation picks the best checkpoint.
# Runs OFA's grid max_epoch {5,7,10} x lr {1e-4,7e-5,6e-5,5e-5,3e-5} x update_freq {4,2,1}, one train.py run
# per point; the settings every GLUE recipe shares are in glue_common.sh.
# Global batch = 16 per GPU x update-freq x GPUs (OFA: 2 GPUs). Dev validation every 10 updates and at
# each epoch end; best-checkpoint metric mcc.
#   MAX_EPOCH, LR, UPDATE_FREQ  one value each (or a space-separated subset) instead of that axis of the grid
#   DATA_DIR      GLUE TSVs                 (default $DATASET_ROOT/glue_data)
#   DATA          train,valid TSVs          (default cola_train.tsv,cola_dev.tsv)
#   RESTORE_FILE  initial weights           (default $CKPT_DIR/ofa_large.pt)
#   SAVE_DIR      folder of the grid's runs (default $RUNS_DIR/cola; one <max_epoch>_<lr>_<update_freq>/ each)
# Usage: [ENV=...] bash train_cola.sh [--dry-run] [extra train.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/glue_common.sh"
ofa_parse_args "$@"

glue_grid cola "4 2 1" --selected-cols=1,2 --batch-size=16 \
  --best-checkpoint-metric=mcc --validate-interval-updates=10
