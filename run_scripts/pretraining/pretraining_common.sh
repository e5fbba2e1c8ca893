# Shared by run_scripts/pretraining/pretrain_ofa_{base,large}.sh (sourced, never run on its own): OFA's
# pretraining recipe (spec §8, pretraining/pretrain_ofa_{base,large}.sh; task and data formats spec §4.9).
#
# Settings (both sizes): unify_task, label-smoothed CE without smoothing, lr 1e-4, 50 epochs with 1% warm-up,
# 4 rows per GPU, update-freq 1, clip-norm 5.0, 384 px images of which 196 patches are sampled for the
# image-text batch, boxes binned relative to 512 px, max_src 80, max_tgt 30, encoder/decoder drop-path 0.1,
# dropout 0.1, a checkpoint every 6000 updates and per epoch (the last 15 epochs kept), no validation.
#
# Environment (each recipe's header repeats it):
#   DATA_DIR        pretraining data  (default $DATASET_ROOT/pretrain_data, the layout of OFA's
#                   pretrain_data_examples.zip)
#   DATA            image-text TSV(s) (default vision_language_examples.tsv; several comma-separated files are
#                   all training files, one per epoch)
#   TEXT_DATA, IMAGE_DATA, DETECTION_DATA   (default text_examples.tsv, image_examples.tsv,
#                   detection_examples.tsv in DATA_DIR)
#   NEG_SAMPLE_DIR  ITM negatives     (default DATA_DIR/negative_sample: all_captions.txt, object.txt, type2ans.json)
#   RESTORE_FILE    released weights  (default $CKPT_DIR/ofa_<size>.pt)
#   SAVE_DIR        checkpoints       (default $RUNS_DIR/pretrain_ofa_<size>)
#
# Starting point, decided here and logged on one line:
#   1. SAVE_DIR/checkpoint_last.pt exists: resume that run (optimizer, schedule, data position);
#   2. else RESTORE_FILE exists: continue pretraining from it, keeping only the weights (OFA's default, which the
#      original README recommends over pretraining from scratch);
#   3. else: pretrain from scratch.
# OFA's own scripts always passed the released checkpoint, so a restarted run began again from it.

source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

# ofa_pretrain ARCH (ofa_base | ofa_large)
ofa_pretrain() {
  local arch=$1
  local data_dir=${DATA_DIR:-$DATASET_ROOT/pretrain_data}
  local data=${DATA:-$data_dir/vision_language_examples.tsv}
  local restore_file=${RESTORE_FILE:-$CKPT_DIR/$arch.pt}
  local save_dir=${SAVE_DIR:-$RUNS_DIR/pretrain_$arch}
  local precision
  local -a start=()
  precision=$(ofa_precision_args)
  if [[ -f "$save_dir/checkpoint_last.pt" ]]; then
    echo "pretraining $arch: resuming $save_dir/checkpoint_last.pt" >&2
  elif [[ -f "$restore_file" ]]; then
    echo "pretraining $arch: continuing from the released checkpoint $restore_file (weights only)" >&2
    start=(--restore-file="$restore_file" --reset-optimizer --reset-dataloader --reset-meters)
  else
    echo "pretraining $arch: $restore_file not found: pretraining from scratch" >&2
  fi
  # shellcheck disable=SC2086  # precision is zero or one word
  ofa_launch train.py "$data" --task=unify_task --arch="$arch" --criterion=adjust_label_smoothed_cross_entropy \
    --text-data="${TEXT_DATA:-$data_dir/text_examples.tsv}" \
    --image-data="${IMAGE_DATA:-$data_dir/image_examples.tsv}" \
    --detection-data="${DETECTION_DATA:-$data_dir/detection_examples.tsv}" \
    --selected-cols=0,1,2,3,4,5,6,7 --text-selected-cols=0,1 --image-selected-cols=0,1,2 \
    --detection-selected-cols=0,1,2 --neg-sample-dir="${NEG_SAMPLE_DIR:-$data_dir/negative_sample}" \
    --bpe-dir="$BPE_DIR" --save-dir="$save_dir" ${start[@]+"${start[@]}"} \
    --label-smoothing=0.0 --batch-size=4 --update-freq=1 \
    --resnet-drop-path-rate=0.0 --encoder-drop-path-rate=0.1 --decoder-drop-path-rate=0.1 \
    --dropout=0.1 --attention-dropout=0.0 \
    --optimizer=adam --adam-betas="(0.9,0.999)" --adam-eps=1e-08 --weight-decay=0.01 --clip-norm=5.0 \
    --lr-scheduler=polynomial_decay --lr=1e-4 --max-epoch=50 --warmup-ratio=0.01 \
    --log-interval=10 --fixed-validation-seed=7 --keep-last-epochs=15 --save-interval=1 \
    --save-interval-updates=6000 --disable-validation \
    --max-src-length=80 --max-tgt-length=30 --num-bins=1000 --patch-image-size=384 \
    --sample-patch-num=196 --max-image-size=512 \
    $precision --fp16-scale-window=128 --num-workers=0
}
