# Shared by run_scripts/image_gen/train_image_gen_stage{1,2}.sh (sourced, never run on its own): the settings
# both OFA image-generation stages share (spec §8 image_gen rows, §4.8): OFA-Large, 256 px images as 32x32 = 1,024
# VQGAN codes, codes restricted to the code-token range, captions cut to 64 words, validation with 24 top-k-256
# samples per caption reranked by CLIP (batch size 1), fp16 loss-scale window 256.
#
# Environment (each recipe's header repeats it):
#   DATA_DIR         image-gen TSVs (id, codes, caption) (default $DATASET_ROOT/coco_image_gen_data)
#   DATA             train,valid TSVs                    (default coco_vqgan_train.tsv,coco_vqgan_dev.tsv)
#   VQGAN_DIR        last.ckpt + model.yaml              (default $CKPT_DIR/vqgan)
#   CLIP_MODEL_PATH  OpenAI-format CLIP ViT-B/16          (default $CKPT_DIR/clip/ViT-B-16.pt)
#   GEN_IMAGES_PATH  validation images                   (default $RESULTS_DIR/image_gen_stage<N>)

source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

OFA_FP16_SCALE_WINDOW=256
IMAGE_GEN_SAMPLING='"min_len":1024,"max_len_a":0,"max_len_b":1024,"sampling_topk":256,"temperature":1.0'

# ofa_image_gen_train STAGE_NUMBER train.py-flags...
ofa_image_gen_train() {
  local stage=$1
  shift
  local data_dir=${DATA_DIR:-$DATASET_ROOT/coco_image_gen_data}
  local vqgan_dir=${VQGAN_DIR:-$CKPT_DIR/vqgan}
  ofa_train "${DATA:-$data_dir/coco_vqgan_train.tsv,$data_dir/coco_vqgan_dev.tsv}" --task=image_gen --arch=ofa_large \
    --selected-cols=0,2,1 --bpe-dir="$BPE_DIR" --batch-size-valid=1 \
    --max-src-length=64 --max-tgt-length=1024 --code-image-size=256 --constraint-range=50265,58457 \
    --vqgan-model-path="$vqgan_dir/last.ckpt" --vqgan-config-path="$vqgan_dir/model.yaml" \
    --clip-model-path="${CLIP_MODEL_PATH:-$CKPT_DIR/clip/ViT-B-16.pt}" \
    --gen-images-path="${GEN_IMAGES_PATH:-$RESULTS_DIR/image_gen_stage$stage}" \
    --eval-args="{\"beam\":24,$IMAGE_GEN_SAMPLING}" \
    --best-checkpoint-metric=score --maximize-best-checkpoint-metric --keep-last-epochs=15 "$@"
}
