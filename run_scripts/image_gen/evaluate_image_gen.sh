#!/usr/bin/env bash
# Text-to-image evaluation (spec §6.2 and image_gen/evaluate_image_gen.sh): 24 top-k-256 samples per caption
# (seed 42), reranked by CLIP ViT-B/16; the best image of each caption goes to GEN_IMAGES_PATH/top1, all of them
# best first to GEN_IMAGES_PATH/all_results. Then Inception Score and FID (against gt_stat.npz) of the top1 images,
# with Inception weights from a local file (nothing is downloaded; OFA's script fetched gt_stat.npz with wget).
#   DATA_DIR          TSVs + gt_stat.npz                  (default $DATASET_ROOT/coco_image_gen_data)
#   DATA              the TSV to evaluate                 (default $DATA_DIR/coco_vqgan_full_test.tsv)
#   CHECKPOINT        finetuned checkpoint                (default $CKPT_DIR/image_gen_large_best.pt)
#   VQGAN_DIR, CLIP_MODEL_PATH                            (defaults $CKPT_DIR/vqgan, $CKPT_DIR/clip/ViT-B-16.pt)
#   GEN_IMAGES_PATH   generated images                    (default $RESULTS_DIR/image_gen)
#   INCEPTION_WEIGHTS Inception-v3 weights for IS / FID   (default $CKPT_DIR/inception/pt_inception-2015-12-05.pth;
#                     skipped with a message when absent)
# Usage: [ENV=...] bash evaluate_image_gen.sh [--dry-run] [extra evaluate.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ofa_parse_args "$@"

DATA_DIR=${DATA_DIR:-$DATASET_ROOT/coco_image_gen_data}
DATA=${DATA:-$DATA_DIR/coco_vqgan_full_test.tsv}
CHECKPOINT=${CHECKPOINT:-$CKPT_DIR/image_gen_large_best.pt}
VQGAN_DIR=${VQGAN_DIR:-$CKPT_DIR/vqgan}
CLIP_MODEL_PATH=${CLIP_MODEL_PATH:-$CKPT_DIR/clip/ViT-B-16.pt}
GEN_IMAGES_PATH=${GEN_IMAGES_PATH:-$RESULTS_DIR/image_gen}
INCEPTION_WEIGHTS=${INCEPTION_WEIGHTS:-$CKPT_DIR/inception/pt_inception-2015-12-05.pth}

ofa_evaluate "$DATA" --path="$CHECKPOINT" --task=image_gen --gen-subset=test --results-path="$GEN_IMAGES_PATH" \
  --batch-size=1 --seed=42 --beam=24 --min-len=1024 --max-len-a=0 --max-len-b=1024 --sampling-topk=256 \
  --temperature=1.0 \
  --model-overrides="$(ofa_json data "$DATA" bpe_dir "$BPE_DIR" selected_cols 0,2,1 code_image_size 256 \
    constraint_range 50265,58457 clip_model_path "$CLIP_MODEL_PATH" vqgan_model_path "$VQGAN_DIR/last.ckpt" \
    vqgan_config_path "$VQGAN_DIR/model.yaml" gen_images_path "$GEN_IMAGES_PATH")"

if [[ "$OFA_DRY_RUN" == 0 && "${NODE_RANK:-0}" == 0 ]]; then  # score once, on the first machine
  if [[ -f "$INCEPTION_WEIGHTS" ]]; then
    "$PYTHON" -m utils.metrics.image_gen --images "$GEN_IMAGES_PATH/top1" --stats "$DATA_DIR/gt_stat.npz" \
      --inception-weights "$INCEPTION_WEIGHTS" --splits 1
  else
    echo "IS / FID skipped: no Inception weights at $INCEPTION_WEIGHTS (set INCEPTION_WEIGHTS)" >&2
  fi
fi
