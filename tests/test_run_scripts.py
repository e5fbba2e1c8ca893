"""The recipes under ``run_scripts/``: shell syntax, the torchrun launcher and every resolved setting.

Each training recipe runs with ``--dry-run`` and the configuration ``train.py`` resolves is compared with a
table written from the reference's hyper-parameter table (OFA_SPEC.md §8, with §4 for columns and prompts
and §7.4 for the optimisation recipe every script shares), not from the scripts. Evaluation recipes are
compared with the inference settings of §6.2.

A ``train.py --dry-run`` process costs a torch import (~2.5 CPU-seconds); with ~300 runs (each GLUE recipe
runs a grid of up to 45 configurations) that would take many minutes on a small machine. So the recipes run
with ``PYTHON`` pointing at a recorder that saves each command line, and the recorded ``train.py`` /
``evaluate.py`` arguments then go through the same ``main(argv)`` dry-run path in this process. Three recipes
also run end to end with the real interpreter.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from itertools import product
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_SCRIPTS = REPO / "run_scripts"
ALL_SCRIPTS = sorted(p.relative_to(RUN_SCRIPTS).as_posix() for p in RUN_SCRIPTS.rglob("*.sh"))
TRAIN_SCRIPTS = [s for s in ALL_SCRIPTS if Path(s).name.startswith("train_")]
EVAL_SCRIPTS = [s for s in ALL_SCRIPTS if Path(s).name.startswith("evaluate_")]
PRETRAIN_SCRIPTS = [s for s in ALL_SCRIPTS if Path(s).name.startswith("pretrain_")]

DUMMY = {
    "DATASET_ROOT": "/dummy/dataset",
    "CKPT_DIR": "/dummy/ckpt",
    "BPE_DIR": "/dummy/bpe",
    "RUNS_DIR": "/dummy/runs",
    "RESULTS_DIR": "/dummy/results",
}

CE = "adjust_label_smoothed_cross_entropy"
EL = "adjust_label_smoothed_encouraging_loss"
SCST = "scst_reward_criterion"


# ---------------------------------------------------------------- expected values (spec §8, §4, §7.4)
def epochs(max_epoch: int, warmup_ratio: float) -> dict[str, Any]:
    return {
        "optimization.max_epoch": max_epoch,
        "optimization.warmup_ratio": warmup_ratio,
        "optimization.max_update": 0,
        "optimization.warmup_updates": 0,
    }


def updates(total: int, warmup: int) -> dict[str, Any]:
    return {
        "optimization.max_epoch": 0,
        "optimization.max_update": total,
        "optimization.total_num_update": total,
        "optimization.warmup_updates": warmup,
        "optimization.warmup_ratio": 0.0,
    }


def row(
    arch: str,
    init: str,
    criterion: str,
    lr: float,
    schedule: dict[str, Any],
    bs: int,
    uf: int,
    img: int | None,
    dp: float,
    dropout: float,
    ls: float | None,
    data: tuple[str, str, str],
    **extra: Any,
) -> dict[str, Any]:
    """One §8 table row as {dotted path in the dry-run JSON: value}; ``extra`` keys use ``__`` for dots."""
    folder, train, valid = data
    expected = {
        "arch": arch,
        "criterion_name": criterion,
        "checkpoint.restore_file": f"{DUMMY['CKPT_DIR']}/{init}",
        "task.data": f"{DUMMY['DATASET_ROOT']}/{folder}/{train},{DUMMY['DATASET_ROOT']}/{folder}/{valid}",
        "optimization.lr": lr,
        "optimization.batch_size": bs,
        "optimization.update_freq": uf,
        "model.encoder_drop_path_rate": dp,
        "model.decoder_drop_path_rate": dp,
        "model.dropout": dropout,
        **schedule,
    }
    if img is not None:  # text-only recipes (GLUE, Gigaword) have no image size
        expected["task.patch_image_size"] = img
    if ls is not None:
        expected["criterion.label_smoothing"] = ls
    expected.update({key.replace("__", "."): value for key, value in extra.items()})
    return expected


# §7.4: the optimisation recipe of every finetuning script, plus the launcher's bf16 default.
COMMON = {
    "optimization.optimizer": "adam",
    "optimization.adam_betas": [0.9, 0.999],
    "optimization.adam_eps": 1e-8,
    "optimization.weight_decay": 0.01,
    "optimization.clip_norm": 1.0,
    "optimization.lr_scheduler": "polynomial_decay",
    "optimization.power": 1.0,
    "checkpoint.reset_optimizer": True,
    "checkpoint.reset_dataloader": True,
    "checkpoint.reset_meters": True,
    "common.fixed_validation_seed": 7,
    "common.num_workers": 0,
    "common.bf16": True,
    "common.fp16": False,
    "task.num_bins": 1000,
    "model.resnet_drop_path_rate": 0.0,
    "model.attention_dropout": 0.0,
}

CAPTION_EVAL_ARGS = {"beam": 5, "max_len_b": 16, "no_repeat_ngram_size": 3}
CIDER_TOKENS = f"{DUMMY['DATASET_ROOT']}/caption_data/cider_cached_tokens"
REFCOCO_EVAL_ARGS = {"beam": 5, "min_len": 4, "max_len_a": 0, "max_len_b": 4}
CAPTION_S1 = ("caption_data", "caption_stage1_train.tsv", "caption_val.tsv")
CAPTION_S2 = ("caption_data", "caption_stage2_train.tsv", "caption_val.tsv")
VQA = ("vqa_data", "vqa_train.tsv", "vqa_val.tsv")
SNLI_VE = ("snli_ve_data", "snli_ve_train.tsv", "snli_ve_dev.tsv")
GIGAWORD = ("gigaword_data", "gigaword_train.tsv", "gigaword_dev.tsv")
IMAGENET = ("imagenet_1k_data", "imagenet_1k_train.tsv", "imagenet_1k_val_subset.tsv")
IMAGENET_CLASSES = f"{DUMMY['DATASET_ROOT']}/imagenet_1k_data/class2label_new.pkl"


def refcoco_data(name: str) -> tuple[str, str, str]:
    return f"{name}_data", f"{name}_train.tsv", f"{name}_val.tsv"


CAPTION_STAGE1 = {
    "task__selected_cols": "0,4,2",
    "task__max_src_length": 80,
    "task__max_tgt_length": 20,
    "task__eval_cider": True,
    "task__eval_args": CAPTION_EVAL_ARGS,
    "task__eval_cider_cached_tokens": f"{CIDER_TOKENS}/coco-valid-words.p",
    "model__freeze_encoder_embedding": True,
    "model__freeze_decoder_embedding": True,
    "checkpoint__best_checkpoint_metric": "cider",
    "checkpoint__maximize_best_checkpoint_metric": True,
    "common__validate_interval_updates": 500,
    "checkpoint__save_interval_updates": 500,
}
CAPTION_STAGE2 = {
    **CAPTION_STAGE1,
    "task__selected_cols": "1,4,2",
    "task__scst": True,
    "task__scst_args": CAPTION_EVAL_ARGS,
    "criterion__scst_cider_cached_tokens": f"{CIDER_TOKENS}/coco-train-words.p",
}
VQA_TASK = {
    "task__selected_cols": "0,5,2,3,4",
    "task__prompt_type": "prev_output",
    "task__add_object": True,
    "task__max_src_length": 80,
    "task__max_object_length": 30,
    "task__max_tgt_length": 30,
    "task__ans2label_file": f"{DUMMY['DATASET_ROOT']}/vqa_data/trainval_ans2label.pkl",
    "task__val_inference_type": "allcand",
    "task__valid_batch_size": 20,
    "ema__store_ema": True,
    "ema__ema_decay": 0.9999,
    "ema__ema_fp32": True,
    "ema__ema_start_update": 0,
    "ema__validate_with_ema": True,
    "model__freeze_encoder_embedding": True,
    "model__freeze_decoder_embedding": True,
    "checkpoint__best_checkpoint_metric": "vqa_score",
    "checkpoint__maximize_best_checkpoint_metric": True,
}
REFCOCO_TASK = {
    "task__selected_cols": "0,4,2,3",
    "task__max_src_length": 80,
    "task__max_tgt_length": 20,
    "task__eval_acc": True,
    "task__eval_args": REFCOCO_EVAL_ARGS,
    "model__freeze_encoder_embedding": False,
    "checkpoint__best_checkpoint_metric": "score",
    "checkpoint__maximize_best_checkpoint_metric": True,
}
GIGAWORD_TASK = {
    "task__selected_cols": "0,1",
    "task__max_src_length": 512,
    "task__max_tgt_length": 64,
    "task__noise_ratio": 0.2,
    "task__eval_rouge": True,
    "task__eval_args": {"beam": 6, "lenpen": 0.7, "max_len_b": 32, "no_repeat_ngram_size": 3},
    "checkpoint__best_checkpoint_metric": "rougeL_f1",
    "checkpoint__maximize_best_checkpoint_metric": True,
    "common__validate_interval_updates": 2500,
    "checkpoint__save_interval_updates": 2500,
}
IMAGENET_TASK = {
    "task__selected_cols": "0,2",
    "task__imagenet_default_mean_and_std": True,
    "task__ans2label_file": IMAGENET_CLASSES,
    "task__valid_batch_size": 20,
    "task__max_src_length": 128,
    "task__max_tgt_length": 30,
    "model__freeze_encoder_embedding": True,
    "model__freeze_decoder_embedding": True,
    "checkpoint__best_checkpoint_metric": "score",
    "checkpoint__maximize_best_checkpoint_metric": True,
}
IMAGE_GEN = ("coco_image_gen_data", "coco_vqgan_train.tsv", "coco_vqgan_dev.tsv")
IMAGE_GEN_SAMPLING = {"min_len": 1024, "max_len_a": 0, "max_len_b": 1024, "sampling_topk": 256, "temperature": 1.0}
IMAGE_GEN_TASK = {
    "task__selected_cols": "0,2,1",
    "task__max_src_length": 64,
    "task__max_tgt_length": 1024,
    "task__code_image_size": 256,
    "model__code_image_size": 256,
    "task__constraint_range": "50265,58457",
    "task__eval_args": {"beam": 24, **IMAGE_GEN_SAMPLING},
    "task__vqgan_model_path": f"{DUMMY['CKPT_DIR']}/vqgan/last.ckpt",
    "task__vqgan_config_path": f"{DUMMY['CKPT_DIR']}/vqgan/model.yaml",
    "task__clip_model_path": f"{DUMMY['CKPT_DIR']}/clip/ViT-B-16.pt",
    "optimization__batch_size_valid": 1,
    "common__fp16_scale_window": 256,
    "checkpoint__keep_last_epochs": 15,
    "checkpoint__best_checkpoint_metric": "score",
    "checkpoint__maximize_best_checkpoint_metric": True,
}
SNLI_VE_TASK = {
    "task__selected_cols": "0,2,3,4,5",
    "task__add_caption": True,
    "task__prompt_type": "prev_output",
    "task__max_src_length": 80,
    "task__max_tgt_length": 20,
    "checkpoint__best_checkpoint_metric": "snli_score",
    "checkpoint__maximize_best_checkpoint_metric": True,
}

# fmt: off
SPEC_TRAIN = {
    "caption/train_caption_stage1.sh": row(
        "ofa_large", "ofa_large.pt", CE, 1e-5, epochs(2, 0.06), 8, 4, 480, 0.1, 0.1, 0.1, CAPTION_S1,
        criterion__drop_worst_ratio=0.2, criterion__drop_worst_after=2500, **CAPTION_STAGE1),
    "caption/train_caption_stage1_base.sh": row(
        "ofa_base", "ofa_base.pt", CE, 1e-5, epochs(5, 0.06), 8, 4, 480, 0.1, 0.1, 0.1, CAPTION_S1,
        criterion__drop_worst_ratio=0.2, criterion__drop_worst_after=6000, **CAPTION_STAGE1),
    "caption/train_caption_stage1_el.sh": row(
        "ofa_large", "ofa_large.pt", EL, 1e-5, epochs(2, 0.06), 8, 4, 480, 0.1, 0.1, 0.1, CAPTION_S1,
        criterion__drop_worst_ratio=0.05, criterion__drop_worst_after=2500, criterion__log_end=0.75,
        criterion__drop_best_ratio=0.0, **CAPTION_STAGE1),
    "caption/train_caption_stage1_el_db.sh": row(
        "ofa_large", "ofa_large.pt", EL, 1e-5, epochs(2, 0.06), 8, 4, 480, 0.1, 0.1, 0.1, CAPTION_S1,
        criterion__drop_worst_ratio=0.05, criterion__drop_worst_after=2500, criterion__log_end=0.75,
        criterion__drop_best_ratio=0.05, criterion__drop_best_after=2500, **CAPTION_STAGE1),
    "caption/train_caption_stage2.sh": row(
        "ofa_large", "caption_stage1_best.pt", SCST, 1e-5, epochs(3, 0.06), 2, 4, 480, 0.0, 0.0, None,
        CAPTION_S2, optimization__end_learning_rate=2e-7, **CAPTION_STAGE2),
    "caption/train_caption_stage2_base.sh": row(
        "ofa_base", "caption_stage1_base_best.pt", SCST, 1e-5, epochs(3, 0.06), 2, 4, 480, 0.0, 0.0, None,
        CAPTION_S2, optimization__end_learning_rate=0.0, **CAPTION_STAGE2),
    "vqa/train_vqa_distributed.sh": row(
        "ofa_large", "ofa_large.pt", CE, 5e-5, updates(40000, 1000), 4, 4, 480, 0.2, 0.1, 0.1, VQA,
        criterion__drop_worst_ratio=0.0, **VQA_TASK),
    "vqa/train_vqa_base_distributed.sh": row(
        "ofa_base", "ofa_base.pt", CE, 5e-5, epochs(15, 0.04), 4, 4, 480, 0.1, 0.1, 0.1, VQA,
        criterion__drop_worst_ratio=0.0, **VQA_TASK),
    **{
        f"refcoco/train_{name}.sh": row(
            "ofa_large", "ofa_large.pt", CE, 3e-5, epochs(10, 0.06), 4, 8, 512, 0.2, 0.1, 0.1,
            refcoco_data(name), **REFCOCO_TASK)
        for name in ("refcoco", "refcocoplus", "refcocog")
    },
    **{
        f"refcoco/train_{name}_base.sh": row(
            "ofa_base", "ofa_base.pt", CE, 5e-5, epochs(12 if name == "refcocog" else 10, 0.06), 4, 8, 512,
            0.1, 0.1, 0.1, refcoco_data(name), **REFCOCO_TASK)
        for name in ("refcoco", "refcocoplus", "refcocog")
    },
    **{
        f"refcoco/train_{name}_el.sh": row(
            "ofa_large", "ofa_large.pt", EL, 3e-5, epochs(10, 0.06), 4, 8, 512, 0.2, 0.1, 0.1,
            refcoco_data(name), criterion__log_end=0.75, **REFCOCO_TASK)
        for name in ("refcoco", "refcocoplus", "refcocog")
    },
    "snli_ve/train_snli_ve.sh": row(
        "ofa_large", "ofa_large.pt", CE, 2e-5, epochs(6, 0.06), 4, 8, 480, 0.2, 0.1, 0.0, SNLI_VE,
        **SNLI_VE_TASK),
    "snli_ve/train_snli_ve_base.sh": row(
        "ofa_base", "ofa_base.pt", CE, 5e-5, epochs(5, 0.06), 4, 8, 480, 0.1, 0.1, 0.0, SNLI_VE,
        **SNLI_VE_TASK),
    "gigaword/train_gigaword.sh": row(
        "ofa_large", "ofa_large.pt", CE, 1e-4, epochs(6, 0.06), 64, 2, None, 0.1, 0.1, 0.1, GIGAWORD,
        **GIGAWORD_TASK),
    "image_gen/train_image_gen_stage1.sh": row(
        "ofa_large", "ofa_large.pt", CE, 1e-3, updates(40000, 2000), 4, 4, None, 0.1, 0.1, 0.0, IMAGE_GEN,
        checkpoint__save_interval=3, common__validate_interval=3,
        task__gen_images_path=f"{DUMMY['RESULTS_DIR']}/image_gen_stage1", **IMAGE_GEN_TASK),
    "image_gen/train_image_gen_stage2.sh": row(
        "ofa_large", "unused", "clip_scst_reward_criterion", 1e-6, updates(5000, 0), 1, 1, None, 0.0, 0.0, None,
        IMAGE_GEN, checkpoint__restore_file=f"{DUMMY['RUNS_DIR']}/image_gen_stage1/checkpoint_last.pt",
        model__freeze_resnet=True, task__scst=True, task__scst_args={"beam": 5, **IMAGE_GEN_SAMPLING},
        criterion__scst_args={"beam": 5, **IMAGE_GEN_SAMPLING}, checkpoint__save_interval=1,
        common__validate_interval=1, checkpoint__save_interval_updates=200, common__validate_interval_updates=200,
        task__gen_images_path=f"{DUMMY['RESULTS_DIR']}/image_gen_stage2", **IMAGE_GEN_TASK),
    "image_classify/train_imagenet_distributed.sh": row(
        "ofa_large", "ofa_large.pt", CE, 5e-5, updates(160000, 1000), 4, 4, 480, 0.1, 0.1, 0.1, IMAGENET,
        **IMAGENET_TASK),
}
# fmt: on

# GLUE (§8 glue row, §4.5 columns and answers): each recipe runs OFA's grid, max_epoch x lr x update_freq in that
# loop order, one train.py run per point into <RUNS_DIR>/<task>/<max_epoch>_<lr>_<update_freq>.
GLUE_MAX_EPOCHS = (5, 7, 10)
GLUE_LRS = ("1e-4", "7e-5", "6e-5", "5e-5", "3e-5")  # as written in the save folder names
YES_NO = {"no": 0, "yes": 1}
# task: (selected cols, per-GPU batch, update_freq grid, best-checkpoint metric, ans2label, validate every N
# updates). The validation interval is each original script's value: §8 summarises it as 1000, which only
# mnli and qqp use.
GLUE = {
    "cola": ("1,2", 16, (4, 2, 1), "mcc", YES_NO, 10),
    "mnli": ("0,1,2", 8, (4, 2), "acc", {"maybe": 0, "yes": 1, "no": 2}, 1000),
    "mrpc": ("0,1,2", 16, (4, 2, 1), "acc", YES_NO, 10),
    "qnli": ("1,2,3", 8, (4, 2), "acc", YES_NO, 500),
    "qqp": ("3,4,5", 8, (4, 2), "acc", YES_NO, 1000),
    "rte": ("1,2,3", 8, (8, 4, 2), "acc", YES_NO, 10),
    "sst2": ("0,1", 16, (2, 1), "acc", {"negative": 0, "positive": 1}, 50),
}


# fmt: off
def glue_run(task: str, max_epoch: int, lr: str, update_freq: int) -> dict[str, Any]:
    cols, bs, _, metric, ans2label, validate_every = GLUE[task]
    data, schedule = ("glue_data", f"{task}_train.tsv", f"{task}_dev.tsv"), epochs(max_epoch, 0.06)
    return row(
        "ofa_large", "ofa_large.pt", CE, float(lr), schedule, bs, update_freq, None, 0.1, 0.1, 0.0, data,
        task__selected_cols=cols,
        task__prompt_type="src",
        task__ans2label_dict=ans2label,
        task__max_src_length=512,
        task__max_tgt_length=30,
        common__fp16_init_scale=16,
        common__validate_interval=1,
        common__validate_interval_updates=validate_every,
        checkpoint__save_interval=100000,
        checkpoint__save_interval_updates=100000,
        checkpoint__best_checkpoint_metric=metric,
        checkpoint__maximize_best_checkpoint_metric=True,
        checkpoint__save_dir=f"{DUMMY['RUNS_DIR']}/{task}/{max_epoch}_{lr}_{update_freq}",
    )
# fmt: on


def glue_grid(task: str) -> list[tuple[int, str, int]]:
    return list(product(GLUE_MAX_EPOCHS, GLUE_LRS, GLUE[task][2]))


SPEC_GRID = {f"glue/train_{task}.sh": [glue_run(task, *point) for point in glue_grid(task)] for task in GLUE}


# §8 pretraining rows (§4.9 for the inputs): one recipe for both sizes. Unlike the finetuning recipes (§7.4)
# they clip at 5.0, use an fp16 loss-scale window of 128, never validate and keep the last 15 epoch checkpoints.
def pretrain(arch: str) -> dict[str, Any]:
    data = f"{DUMMY['DATASET_ROOT']}/pretrain_data"
    return {
        "arch": arch, "task_name": "unify_task", "criterion_name": CE,
        "task.data": f"{data}/vision_language_examples.tsv", "task.text_data": f"{data}/text_examples.tsv",
        "task.image_data": f"{data}/image_examples.tsv", "task.detection_data": f"{data}/detection_examples.tsv",
        "task.neg_sample_dir": f"{data}/negative_sample", "task.selected_cols": "0,1,2,3,4,5,6,7",
        "task.text_selected_cols": "0,1", "task.image_selected_cols": "0,1,2", "task.detection_selected_cols": "0,1,2",
        "task.patch_image_size": 384, "task.max_image_size": 512, "task.max_src_length": 80,
        "task.max_tgt_length": 30, "task.num_bins": 1000, "task.bpe_dir": DUMMY["BPE_DIR"],
        "criterion.label_smoothing": 0.0, "criterion.sample_patch_num": 196,
        "optimization.lr": 1e-4, **epochs(50, 0.01), "optimization.batch_size": 4, "optimization.update_freq": 1,
        "optimization.clip_norm": 5.0, "optimization.optimizer": "adam", "optimization.adam_betas": [0.9, 0.999],
        "optimization.adam_eps": 1e-8, "optimization.weight_decay": 0.01,
        "optimization.lr_scheduler": "polynomial_decay", "optimization.power": 1.0,
        "model.encoder_drop_path_rate": 0.1, "model.decoder_drop_path_rate": 0.1,
        "model.resnet_drop_path_rate": 0.0, "model.dropout": 0.1, "model.attention_dropout": 0.0,
        "common.fp16_scale_window": 128, "common.disable_validation": True, "common.fixed_validation_seed": 7,
        "common.log_interval": 10, "common.num_workers": 0, "common.bf16": True, "common.fp16": False,
        "checkpoint.save_interval": 1, "checkpoint.save_interval_updates": 6000, "checkpoint.keep_last_epochs": 15,
    }  # fmt: skip


SPEC_PRETRAIN = {f"pretraining/pretrain_{arch}.sh": pretrain(arch) for arch in ("ofa_base", "ofa_large")}


def train_runs(script: str) -> list[dict[str, Any]]:
    """The train.py runs a training recipe makes, in order: one, or a GLUE recipe's whole grid."""
    return SPEC_GRID[script] if script in SPEC_GRID else [SPEC_TRAIN[script]]


# §6.2 inference settings: one dict per evaluate.py run, as dotted paths into its dry-run JSON.
CAPTION_GEN = {
    "generation.beam": 5,
    "generation.max_len_b": 16,
    "generation.no_repeat_ngram_size": 3,
    "generation.min_len": 1,
    "generation.lenpen": 1.0,
    "generation.unnormalized": False,
}


def caption_eval(ckpt: str, **gen: Any) -> list[dict[str, Any]]:
    return [
        {
            **CAPTION_GEN,
            **{f"generation.{k}": v for k, v in gen.items()},
            "task": "caption",
            "args.path": f"{DUMMY['CKPT_DIR']}/{ckpt}",
            "args.data": f"{DUMMY['DATASET_ROOT']}/caption_data/caption_test.tsv",
            "args.gen_subset": "test",
            "args.batch_size": 16,
            "task_config.selected_cols": "1,4,2",
            "task_config.eval_cider": False,
        }
    ]


def vqa_eval(ckpt: str, beam_search: bool) -> list[dict[str, Any]]:
    expected = {
        "task": "vqa_gen",
        "args.path": f"{DUMMY['CKPT_DIR']}/{ckpt}",
        "args.data": f"{DUMMY['DATASET_ROOT']}/vqa_data/vqa_val.tsv",
        "args.gen_subset": "val",
        "args.ema_eval": True,
        "args.beam_search_vqa_eval": beam_search,
        "args.batch_size": 16 if beam_search else 8,
        "task_config.selected_cols": "0,5,2,3,4",
        "task_config.ans2label_file": f"{DUMMY['DATASET_ROOT']}/vqa_data/trainval_ans2label.pkl",
    }
    if beam_search:
        expected.update({"generation.beam": 5, "generation.unnormalized": True, "generation.temperature": 1.0})
    return [expected]


def refcoco_eval(size: str) -> list[dict[str, Any]]:
    splits = {
        "refcoco": ("val", "testA", "testB"),
        "refcocoplus": ("val", "testA", "testB"),
        "refcocog": ("val", "test"),
    }
    return [
        {
            "task": "refcoco",
            "args.path": f"{DUMMY['CKPT_DIR']}/{name}_{size}_best.pt",
            "args.data": f"{DUMMY['DATASET_ROOT']}/{name}_data/{name}_{split}.tsv",
            "args.gen_subset": f"{name}_{split}",
            "args.results_path": f"{DUMMY['RESULTS_DIR']}/{name}",
            "args.batch_size": 16,
            "generation.beam": 5,
            "generation.min_len": 4,
            "generation.max_len_a": 0,
            "generation.max_len_b": 4,
            "generation.no_repeat_ngram_size": 3,
            "task_config.selected_cols": "0,4,2,3",
        }
        for name, names_splits in splits.items()
        for split in names_splits
    ]


def snli_ve_eval(ckpt: str) -> list[dict[str, Any]]:
    return [
        {
            "task": "snli_ve",
            "args.path": f"{DUMMY['CKPT_DIR']}/{ckpt}",
            "args.data": f"{DUMMY['DATASET_ROOT']}/snli_ve_data/snli_ve_dev.tsv",
            "args.gen_subset": "dev",
            "task_config.selected_cols": "0,2,3,4,5",
        }
    ]


SPEC_EVAL = {
    "caption/evaluate_caption.sh": caption_eval("caption_large_best.pt"),
    "caption/evaluate_caption_base.sh": caption_eval("caption_base_best.pt"),
    "caption/evaluate_caption_huge.sh": caption_eval("caption_huge_best.pt", beam=10, temperature=0.98, lenpen=0.98),
    "vqa/evaluate_vqa_allcand.sh": vqa_eval("vqa_large_best.pt", beam_search=False),
    "vqa/evaluate_vqa_base_allcand.sh": vqa_eval("vqa_base_best.pt", beam_search=False),
    "vqa/evaluate_vqa_beam.sh": vqa_eval("vqa_large_best.pt", beam_search=True),
    "vqa/evaluate_vqa_beam_base.sh": vqa_eval("vqa_base_best.pt", beam_search=True),
    "vqa/evaluate_vqa_zeroshot.sh": [
        {
            "task": "vqa_gen",
            "args.path": f"{DUMMY['CKPT_DIR']}/ofa_large.pt",
            "args.zero_shot": True,
            "args.ema_eval": False,
            "generation.beam": 20,
            "generation.unnormalized": True,
            "generation.zero_shot": True,
            "task_config.prompt_type": "none",
            "task_config.patch_image_size": 480,
            "task_config.selected_cols": "0,5,2,3,4",
        }
    ],
    "refcoco/evaluate_refcoco.sh": refcoco_eval("large"),
    "refcoco/evaluate_refcoco_base.sh": refcoco_eval("base"),
    "refcoco/evaluate_refcoco_zeroshot.sh": [
        {
            "task": "refcoco",
            "args.path": f"{DUMMY['CKPT_DIR']}/ofa_large.pt",
            "args.gen_subset": "refcoco_val",
            "args.zero_shot": True,
            "task_config.patch_image_size": 480,
            "task_config.max_image_size": 512,
            "generation.beam": 5,
            "generation.min_len": 4,
            "generation.max_len_b": 4,
        }
    ],
    "snli_ve/evaluate_snli_ve.sh": snli_ve_eval("snli_ve_large_best.pt"),
    "snli_ve/evaluate_snli_ve_base.sh": snli_ve_eval("snli_ve_base_best.pt"),
    "gigaword/evaluate_gigaword.sh": [
        {
            "task": "gigaword",
            "args.path": f"{DUMMY['CKPT_DIR']}/gigaword_large_best.pt",
            "args.data": f"{DUMMY['DATASET_ROOT']}/gigaword_data/gigaword_test.tsv",
            "args.gen_subset": "test",
            "args.results_path": f"{DUMMY['RESULTS_DIR']}/gigaword",
            "args.batch_size": 32,
            "generation.beam": 6,
            "generation.lenpen": 0.7,
            "generation.max_len_b": 32,
            "generation.no_repeat_ngram_size": 3,
            "task_config.selected_cols": "0,1",
        }
    ],
    "image_gen/evaluate_image_gen.sh": [
        {
            "task": "image_gen",
            "args.path": f"{DUMMY['CKPT_DIR']}/image_gen_large_best.pt",
            "args.data": f"{DUMMY['DATASET_ROOT']}/coco_image_gen_data/coco_vqgan_full_test.tsv",
            "args.gen_subset": "test",
            "args.batch_size": 1,
            "generation.beam": 24,
            "generation.seed": 42,
            **{f"generation.{k}": v for k, v in IMAGE_GEN_SAMPLING.items()},
            "task_config.selected_cols": "0,2,1",
            "task_config.code_image_size": 256,
            "task_config.constraint_range": "50265,58457",
            "task_config.clip_model_path": f"{DUMMY['CKPT_DIR']}/clip/ViT-B-16.pt",
            "task_config.vqgan_model_path": f"{DUMMY['CKPT_DIR']}/vqgan/last.ckpt",
            "task_config.gen_images_path": f"{DUMMY['RESULTS_DIR']}/image_gen",
        }
    ],
    "image_classify/evaluate_imagenet.sh": [
        {
            "task": "image_classify",
            "args.path": f"{DUMMY['CKPT_DIR']}/imagenet_1k_large_best.pt",
            "args.data": f"{DUMMY['DATASET_ROOT']}/imagenet_1k_data/imagenet_1k_val.tsv",
            "args.gen_subset": "val",
            "args.batch_size": 8,
            "task_config.selected_cols": "0,2",
            "task_config.ans2label_file": IMAGENET_CLASSES,
        }
    ],
    "snli_ve/evaluate_snli_ve_zeroshot.sh": [
        {
            "task": "snli_ve",
            "args.path": f"{DUMMY['CKPT_DIR']}/ofa_base.pt",
            "args.zero_shot": True,
            "task_config.patch_image_size": 384,
            "task_config.prompt_type": "prev_output",
            "task_config.selected_cols": "0,2,3,4,5",
        }
    ],
}


# ---------------------------------------------------------------- running recipes
RECORDER = """#!/usr/bin/env bash
n=$(find "$OFA_RECORD_DIR" -name 'call*' | wc -l)
printf '%s\\0' "$@" > "$OFA_RECORD_DIR/call$(printf %03d "$n")"
"""


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment (no stray DATA/CHECKPOINT/... from the caller) with dummy locations."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **DUMMY}
    env.update(extra)
    return env


def run_recorded(tmp_path: Path, script: str, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list]:
    """Run a recipe with PYTHON replaced by the recorder; return the process and the recorded argv lists."""
    record_dir = tmp_path / f"rec_{script.replace('/', '_')}_{len(list(tmp_path.iterdir()))}"
    record_dir.mkdir()
    recorder = tmp_path / "python_recorder.sh"
    if not recorder.exists():
        recorder.write_text(RECORDER)
        recorder.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(RUN_SCRIPTS / script), *args],
        env=base_env(PYTHON=str(recorder), OFA_RECORD_DIR=str(record_dir), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [(f.read_bytes().split(b"\0")[:-1]) for f in sorted(record_dir.glob("call*"))]
    return proc, [[a.decode() for a in call] for call in calls]


def load_cli(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_run_scripts_cli_{name}", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a package being edited elsewhere must not hide the shell tests
        pytest.skip(f"{name}.py does not import yet ({type(err).__name__}: {err})")
    return module


@pytest.fixture(scope="module")
def train_cli() -> ModuleType:
    return load_cli("train")


@pytest.fixture(scope="module")
def evaluate_cli() -> ModuleType:
    return load_cli("evaluate")


def call_main(module: ModuleType, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = module.main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
            if not isinstance(exc.code, int) and exc.code is not None:
                err.write(str(exc.code))
    return rc, out.getvalue(), err.getvalue()


def not_there_yet(err: str, entry: str) -> str | None:
    """Why a dry run failed because its task/criterion (or, for evaluate.py, a flag) is still being written."""
    for line in (line.strip() for line in err.splitlines()):
        if "invalid choice" in line and ("--task" in line or "--criterion" in line):
            return line
        if entry == "evaluate.py" and ("unrecognized arguments" in line or "not implemented" in line):
            return line
    return None


def resolve(module: ModuleType, script: str, argv: list[str], entry: str) -> dict[str, Any]:
    assert argv[0] == str(REPO / entry), f"{script} should run {entry} directly in dry-run mode: {argv[:2]}"
    assert argv[-1] == "--dry-run"
    rc, out, err = call_main(module, argv[1:])
    if rc != 0:
        reason = not_there_yet(err, entry)
        if reason:
            pytest.skip(f"{script}: {entry} does not take this recipe yet: {reason}")
        pytest.fail(f"{script}: {entry} --dry-run exited {rc}:\n{err[-3000:]}")
    return json.loads(out)


def lookup(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        assert isinstance(value, dict) and part in value, f"{dotted!r} is missing from the resolved config"
        value = value[part]
    return value


def check(config: dict[str, Any], expected: dict[str, Any], script: str) -> None:
    mismatches = []
    for path, want in expected.items():
        got = lookup(config, path)
        if isinstance(want, dict) and isinstance(got, str):  # eval_args / scst_args are JSON strings
            got = json.loads(got)
        if isinstance(want, float) and not isinstance(want, bool):
            ok = got == pytest.approx(want, rel=1e-9, abs=1e-12)
        elif isinstance(want, list):
            ok = list(got) == pytest.approx(want)
        else:
            ok = got == want
        if not ok:
            mismatches.append(f"{path}: expected {want!r}, resolved {got!r}")
    assert not mismatches, f"{script} differs from the spec:\n" + "\n".join(mismatches)


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_shell_syntax(script: str):
    proc = subprocess.run(["bash", "-n", str(RUN_SCRIPTS / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_recipe_has_spec_values():
    assert not set(SPEC_TRAIN) & set(SPEC_GRID)
    assert sorted([*SPEC_TRAIN, *SPEC_GRID]) == TRAIN_SCRIPTS
    assert sorted(SPEC_EVAL) == EVAL_SCRIPTS
    assert sorted(SPEC_PRETRAIN) == PRETRAIN_SCRIPTS


@pytest.mark.parametrize("start", ["released", "scratch", "resume"])
@pytest.mark.parametrize("script", PRETRAIN_SCRIPTS)
def test_pretraining_recipe_matches_spec(script: str, start: str, train_cli: ModuleType, tmp_path: Path):
    """§8 pretraining rows. The run continues from the released checkpoint when it is there (OFA's default, weights
    only), starts from scratch when it is not, and first of all resumes its own checkpoint_last.pt; a log line
    says which."""
    arch = Path(script).stem.removeprefix("pretrain_")
    ckpt_dir, save_dir = tmp_path / "ckpt", tmp_path / "run"
    ckpt_dir.mkdir()
    save_dir.mkdir()
    released = ckpt_dir / f"{arch}.pt"
    if start != "scratch":
        released.write_bytes(b"")
    if start == "resume":
        (save_dir / "checkpoint_last.pt").write_bytes(b"")
    proc, calls = run_recorded(tmp_path, script, "--dry-run", CKPT_DIR=str(ckpt_dir), SAVE_DIR=str(save_dir))
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 1
    config = resolve(train_cli, script, calls[0], "train.py")
    init = start == "released"
    expected = {
        **SPEC_PRETRAIN[script],
        "checkpoint.save_dir": str(save_dir),
        "checkpoint.restore_file": str(released) if init else "checkpoint_last.pt",
        **{f"checkpoint.reset_{part}": init for part in ("optimizer", "dataloader", "meters")},
    }
    check(config, expected, script)
    said = {
        "released": f"continuing from the released checkpoint {released}",
        "scratch": f"{released} not found: pretraining from scratch",
        "resume": f"resuming {save_dir / 'checkpoint_last.pt'}",
    }
    assert said[start] in proc.stderr


@pytest.mark.parametrize("script", TRAIN_SCRIPTS)
def test_training_recipe_matches_spec(script: str, train_cli: ModuleType, tmp_path: Path):
    proc, calls = run_recorded(tmp_path, script, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    expected = train_runs(script)
    assert len(calls) == len(expected), f"{script}: {len(calls)} train.py runs, expected {len(expected)}"
    for argv, want in zip(calls, expected, strict=True):
        config = resolve(train_cli, script, argv, "train.py")
        check(config, {**COMMON, **want}, script)


def grid_points(configs: list[dict[str, Any]]) -> list[tuple[int, float, int]]:
    return [
        (c["optimization"]["max_epoch"], c["optimization"]["lr"], c["optimization"]["update_freq"]) for c in configs
    ]


@pytest.mark.parametrize("task", sorted(GLUE))
def test_glue_recipe_runs_the_spec_grid(task: str, train_cli: ModuleType, tmp_path: Path):
    """§8: max_epoch {5,7,10} x lr {1e-4,7e-5,6e-5,5e-5,3e-5} x the task's update_freq grid, each point once, each
    into its own folder; batch size, warm-up, regularisation and lengths the same at every point."""
    script = f"glue/train_{task}.sh"
    proc, calls = run_recorded(tmp_path, script, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    configs = [resolve(train_cli, script, argv, "train.py") for argv in calls]
    spec_grid = [(e, float(lr), uf) for e, lr, uf in glue_grid(task)]
    assert grid_points(configs) == spec_grid
    assert len(set(spec_grid)) == len(GLUE_MAX_EPOCHS) * len(GLUE_LRS) * len(GLUE[task][2])
    assert len({c["checkpoint"]["save_dir"] for c in configs}) == len(configs)
    fixed = {
        "optimization.batch_size": GLUE[task][1],
        "optimization.warmup_ratio": 0.06,
        "model.encoder_drop_path_rate": 0.1,
        "model.decoder_drop_path_rate": 0.1,
        "model.resnet_drop_path_rate": 0.0,
        "model.dropout": 0.1,
        "model.attention_dropout": 0.0,
        "criterion.label_smoothing": 0.0,
        "task.max_src_length": 512,
        "task.max_tgt_length": 30,
        "task.prompt_type": "src",
    }
    for config in configs:
        check(config, fixed, script)


@pytest.mark.parametrize(
    ("env", "points"),
    [
        ({"LR": "6e-5", "MAX_EPOCH": "10", "UPDATE_FREQ": "1"}, [(10, "6e-5", 1)]),
        (
            {"LR": "3e-5", "MAX_EPOCH": "5 7"},
            [(5, "3e-5", 4), (5, "3e-5", 2), (5, "3e-5", 1), (7, "3e-5", 4), (7, "3e-5", 2), (7, "3e-5", 1)],
        ),
    ],
)
def test_glue_grid_axes_from_environment(env: dict[str, str], points: list, train_cli: ModuleType, tmp_path: Path):
    proc, calls = run_recorded(tmp_path, "glue/train_mrpc.sh", "--dry-run", **env)
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == len(points)
    for argv, point in zip(calls, points, strict=True):
        config = resolve(train_cli, "glue/train_mrpc.sh", argv, "train.py")
        check(config, {**COMMON, **glue_run("mrpc", *point)}, "glue/train_mrpc.sh")


def test_glue_save_dir_is_the_grid_root(tmp_path: Path):
    proc, calls = run_recorded(tmp_path, "glue/train_rte.sh", "--dry-run", SAVE_DIR="/o/rte", LR="1e-4", MAX_EPOCH="5")
    assert proc.returncode == 0, proc.stderr
    assert [[a for a in argv if a.startswith("--save-dir=")] for argv in calls] == [
        [f"--save-dir=/o/rte/5_1e-4_{uf}"] for uf in (8, 4, 2)
    ]


@pytest.mark.parametrize("script", EVAL_SCRIPTS)
def test_evaluation_recipe_matches_spec(script: str, evaluate_cli: ModuleType, tmp_path: Path):
    proc, calls = run_recorded(tmp_path, script, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    expected = SPEC_EVAL[script]
    assert len(calls) == len(expected), f"{script}: {len(calls)} evaluate.py runs, expected {len(expected)}"
    for argv, want in zip(calls, expected, strict=True):
        config = resolve(evaluate_cli, script, argv, "evaluate.py")
        check(config, {"args.bf16": True, "args.num_workers": 0, **want}, script)


def test_pass_through_arguments_come_last_and_win(train_cli: ModuleType, tmp_path: Path):
    proc, calls = run_recorded(tmp_path, "refcoco/train_refcocog_base.sh", "--dry-run", "--lr=7e-6", "--max-epoch=3")
    assert proc.returncode == 0, proc.stderr
    assert calls[0][-3:] == ["--lr=7e-6", "--max-epoch=3", "--dry-run"]
    config = resolve(train_cli, "train_refcocog_base.sh", calls[0], "train.py")
    assert config["optimization"]["lr"] == pytest.approx(7e-6)
    assert config["optimization"]["max_epoch"] == 3


def test_locations_come_from_the_environment(tmp_path: Path):
    env = {"DATA": "/d/a.tsv,/d/b.tsv", "RESTORE_FILE": "/w/init.pt", "SAVE_DIR": "/o/run", "BPE_DIR": "/b"}
    proc, calls = run_recorded(tmp_path, "snli_ve/train_snli_ve.sh", "--dry-run", **env)
    assert proc.returncode == 0, proc.stderr
    argv = calls[0]
    assert argv[1] == "/d/a.tsv,/d/b.tsv"
    for flag in ("--restore-file=/w/init.pt", "--save-dir=/o/run", "--bpe-dir=/b"):
        assert flag in argv


def test_torchrun_launch_from_environment(tmp_path: Path):
    env = {"NNODES": "4", "NPROC_PER_NODE": "8", "NODE_RANK": "2", "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "1234",
           "MAX_RESTARTS": "3"}  # fmt: skip
    proc, calls = run_recorded(tmp_path, "vqa/train_vqa_distributed.sh", **env)
    assert proc.returncode == 0, proc.stderr
    argv = calls[0]
    assert argv[:8] == [
        "-m",
        "torch.distributed.run",
        "--max-restarts=3",
        "--nnodes=4",
        "--nproc_per_node=8",
        "--node_rank=2",
        "--master_addr=10.1.2.3",
        "--master_port=1234",
    ]
    assert argv[8] == str(REPO / "train.py")
    assert "--dry-run" not in argv and "--bf16" in argv


@pytest.mark.parametrize(("visible", "nproc"), [("0,1,2", "3"), ("", "1")])
def test_torchrun_defaults(tmp_path: Path, visible: str, nproc: str):
    proc, calls = run_recorded(tmp_path, "caption/evaluate_caption.sh", CUDA_VISIBLE_DEVICES=visible)
    assert proc.returncode == 0, proc.stderr
    argv = calls[0]
    assert argv[2:8] == [
        "--max-restarts=0",
        "--nnodes=1",
        f"--nproc_per_node={nproc}",
        "--node_rank=0",
        "--master_addr=127.0.0.1",
        "--master_port=29500",
    ]
    assert argv[8] == str(REPO / "evaluate.py")
    assert len(calls) == 2 and calls[1][0] == str(RUN_SCRIPTS / "caption" / "coco_eval.py")  # then COCO scoring


@pytest.mark.parametrize(("precision", "flags"), [("fp16", ["--fp16"]), ("fp32", []), ("bf16", ["--bf16"])])
def test_precision(tmp_path: Path, precision: str, flags: list[str]):
    proc, calls = run_recorded(tmp_path, "caption/train_caption_stage2.sh", "--dry-run", PRECISION=precision)
    assert proc.returncode == 0, proc.stderr
    assert [a for a in calls[0] if a in ("--fp16", "--bf16")] == flags


def test_bad_precision_fails(tmp_path: Path):
    proc, calls = run_recorded(tmp_path, "caption/train_caption_stage1.sh", "--dry-run", PRECISION="int8")
    assert proc.returncode != 0 and not calls
    assert "PRECISION" in proc.stderr


def test_json_helper_escapes_strings():
    script = f'source "{RUN_SCRIPTS}/common.sh"; ofa_json path "/a b/\\"q\\".tsv" n 20 f false s 0,4,2 x 1e-5'
    proc = subprocess.run(["bash", "-c", script], env=base_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"path": '/a b/"q".tsv', "n": 20, "f": False, "s": "0,4,2", "x": 1e-5}


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_real_dry_runs_end_to_end():
    """The unrecorded path: the recipe finds the repository's interpreter and train.py/evaluate.py print JSON."""
    scripts = ["caption/train_caption_stage1.sh", "caption/evaluate_caption.sh"]
    env = {k: v for k, v in base_env().items() if k != "PYTHON"}

    def run(script: str) -> subprocess.CompletedProcess:
        cmd = ["bash", str(RUN_SCRIPTS / script), "--dry-run"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=len(scripts)) as pool:
        results = dict(zip(scripts, pool.map(run, scripts), strict=True))
    for script, proc in results.items():
        if proc.returncode != 0:
            reason = not_there_yet(proc.stderr, "evaluate.py" if "evaluate" in script else "train.py")
            if reason:
                pytest.skip(f"{script}: not runnable yet: {reason}")
            pytest.fail(f"{script} --dry-run exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    train = json.loads(results["caption/train_caption_stage1.sh"].stdout)
    assert (train["arch"], train["optimization"]["lr"]) == ("ofa_large", 1e-5)
    evaluation = json.loads(results["caption/evaluate_caption.sh"].stdout)
    assert evaluation["generation"]["beam"] == 5


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_real_glue_dry_run_prints_one_config_per_grid_point():
    env = {k: v for k, v in base_env(MAX_EPOCH="5", LR="3e-5").items() if k != "PYTHON"}
    cmd = ["bash", str(RUN_SCRIPTS / "glue/train_sst2.sh"), "--dry-run"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        reason = not_there_yet(proc.stderr, "train.py")
        if reason:
            pytest.skip(f"glue/train_sst2.sh: not runnable yet: {reason}")
        pytest.fail(f"glue/train_sst2.sh --dry-run exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    decoder, text, configs = json.JSONDecoder(), proc.stdout.strip(), []
    while text:
        config, end = decoder.raw_decode(text)
        configs.append(config)
        text = text[end:].lstrip()
    assert grid_points(configs) == [(5, 3e-5, 2), (5, 3e-5, 1)]
    assert [c["task_name"] for c in configs] == ["sst2", "sst2"]
