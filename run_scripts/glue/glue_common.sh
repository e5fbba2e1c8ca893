# Shared by run_scripts/glue/train_<task>.sh (sourced, never run on its own): the hyper-parameter search every
# OFA GLUE recipe runs (spec §8, glue/train_{task}.sh), one train.py run per grid point, each with its own
# save folder <SAVE_DIR>/<max_epoch>_<lr>_<update_freq> as in OFA (which named its log files the same way).
#
# Grid (loop order as in OFA: max_epoch outermost, then lr, then update_freq):
#   max_epoch    5 7 10
#   lr           1e-4 7e-5 6e-5 5e-5 3e-5
#   update_freq  per task (cola/mrpc: 4 2 1; mnli/qnli/qqp: 4 2; rte: 8 4 2; sst2: 2 1)
# Fixed: OFA-Large from ofa_large.pt, label-smoothed CE with no smoothing, warmup 6% of the updates,
# encoder/decoder drop-path 0.1, dropout 0.1, attention dropout 0, prompt_type src, sentences cut to 512 words,
# max_tgt 30, fp16 initial loss scale 16 (only read with PRECISION=fp16), text only (no image settings).
#
# Environment (each recipe's header repeats it):
#   MAX_EPOCH, LR, UPDATE_FREQ  restrict one axis of the grid to these values (one value, or several separated
#                               by spaces); set all three to run a single combination
#   DATA_DIR      GLUE TSVs                 (default $DATASET_ROOT/glue_data)
#   DATA          train,valid TSVs          (default <task>_train.tsv,<task>_dev.tsv)
#   RESTORE_FILE  initial weights           (default $CKPT_DIR/ofa_large.pt)
#   SAVE_DIR      folder of the grid's runs (default $RUNS_DIR/<task>; one <max_epoch>_<lr>_<update_freq>/ each)
#
# Validation and checkpoints follow OFA: dev validation every --validate-interval-updates (set per task by the
# recipe) and at each epoch end, but checkpoints only when training ends (save intervals of 100000), so a run
# writes checkpoint_last.pt/checkpoint_best.pt once rather than at every validation. OFA read each run's best
# dev score from its log.

source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

GLUE_MAX_EPOCHS="5 7 10"
GLUE_LRS="1e-4 7e-5 6e-5 5e-5 3e-5"

# glue_grid TASK "UPDATE_FREQ GRID" [task-specific train.py flags...]
glue_grid() {
  local task=$1 update_freqs=$2
  shift 2
  local data_dir=${DATA_DIR:-$DATASET_ROOT/glue_data}
  local data=${DATA:-$data_dir/${task}_train.tsv,$data_dir/${task}_dev.tsv}
  local restore_file=${RESTORE_FILE:-$CKPT_DIR/ofa_large.pt}
  local save_root=${SAVE_DIR:-$RUNS_DIR/$task}
  local max_epoch lr update_freq runs=0

  for max_epoch in ${MAX_EPOCH:-$GLUE_MAX_EPOCHS}; do
    for lr in ${LR:-$GLUE_LRS}; do
      for update_freq in ${UPDATE_FREQ:-$update_freqs}; do
        runs=$((runs + 1))
        printf 'glue %s: max_epoch %s, lr %s, update_freq %s\n' "$task" "$max_epoch" "$lr" "$update_freq" >&2
        ofa_train "$data" --task="$task" --arch=ofa_large --criterion=adjust_label_smoothed_cross_entropy \
          --bpe-dir="$BPE_DIR" --restore-file="$restore_file" \
          --save-dir="$save_root/${max_epoch}_${lr}_${update_freq}" \
          --lr="$lr" --max-epoch="$max_epoch" --warmup-ratio=0.06 --update-freq="$update_freq" \
          --label-smoothing=0.0 --dropout=0.1 --attention-dropout=0.0 \
          --resnet-drop-path-rate=0.0 --encoder-drop-path-rate=0.1 --decoder-drop-path-rate=0.1 \
          --max-src-length=512 --max-tgt-length=30 --prompt-type=src \
          --maximize-best-checkpoint-metric \
          --save-interval=100000 --save-interval-updates=100000 --validate-interval=1 \
          --fp16-init-scale=16 "$@"
      done
    done
  done
  if ((runs == 0)); then
    echo "glue $task: empty grid (MAX_EPOCH='${MAX_EPOCH-}', LR='${LR-}', UPDATE_FREQ='${UPDATE_FREQ-}')" >&2
    return 2
  fi
}
