"""Converters for the COCO-based datasets: COCO captions, VQAv2 and RefCOCO/RefCOCO+/RefCOCOg (refer format).

Row layouts (OFA spec section 4; ``None`` marks the image column, ``predicted-objects`` is left empty because
the VinVL object tags are not part of the public annotations and OFA's datasets do not need them):

* caption: ``uniq-id, image-id, caption, predicted-objects, image-base64``; ``--eval`` writes one row per
  image with all its captions joined by ``&&`` (the uniq-id is then the image id).
* vqa: ``question-id, image-id, question, answers, predicted-objects, image-base64`` with answers
  ``conf|!+answer&&...``, most confident first (see ``vqa_soft_scores`` for the confidence).
* refcoco: ``uniq-id (sent_id), image-id, text, region "x0,y0,x1,y1", image-base64``, one row per sentence.
"""

import io
import pickle
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data.converters.core import ConvertError, Entry, Malformed, build_each, describe_error, find_image, load_json

ANSWER_SEPARATOR = "&&"
CONF_SEPARATOR = "|!+"


def _image_files(images_json: Sequence[dict], images: Path) -> dict[int, Path]:
    """``image id -> images/file_name`` from a COCO ``images`` list (entries without both keys are ignored)."""
    return {
        image["id"]: images / image["file_name"]
        for image in images_json
        if isinstance(image, dict) and "id" in image and "file_name" in image
    }


def _coco_image(files: dict[int, Path], images: Path, image_id: Any, subtype: str = "") -> Path:
    """The file of a COCO image: from the ``images`` list, else ``COCO_<subtype>_<id:012d>`` or ``<id:012d>``."""
    if image_id in files:
        return files[image_id]
    number = int(image_id)
    stems = [f"COCO_{subtype}_{number:012d}"] if subtype else []
    return find_image(images, *stems, f"{number:012d}")


def coco_caption_entries(annotations: Path, images: Path, eval_mode: bool = False) -> list[Entry | Malformed]:
    """Rows of a COCO captions file (``captions_*.json``): one per caption, or one per image with ``eval_mode``."""
    data = load_json(annotations)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ConvertError(f"{annotations} has no 'annotations' list (not a COCO captions file)")
    files = _image_files(data.get("images", []), images)
    if not eval_mode:

        def build(ann: dict) -> Entry:
            columns = (str(ann["id"]), str(ann["image_id"]), str(ann["caption"]), "", None)
            return Entry(f"annotations[id={ann['id']}]", _coco_image(files, images, ann["image_id"]), columns)

        return build_each(data["annotations"], "annotations", build)
    captions: dict[Any, list[str]] = {}
    entries: list[Entry | Malformed] = []
    for i, ann in enumerate(data["annotations"]):
        try:
            captions.setdefault(ann["image_id"], []).append(str(ann["caption"]).strip())
        except (KeyError, TypeError) as err:
            entries.append(Malformed(f"annotations[{i}]", describe_error(err)))

    def build_image(image_id: Any) -> Entry:
        columns = (str(image_id), str(image_id), ANSWER_SEPARATOR.join(captions[image_id]), "", None)
        return Entry(f"image {image_id}", _coco_image(files, images, image_id), columns)

    return entries + build_each(list(captions), "images", build_image)


def vqa_soft_scores(answers: Sequence[str]) -> dict[str, float]:
    """The VQA accuracy of each distinct human answer, as the official VQA evaluation computes it.

    An answer given by ``c`` of the ``n`` annotators scores the mean, over the ``n`` leave-one-out subsets of
    annotators, of ``min(1, matches / 3)``: with 10 answers 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, 4+ -> 1.0 (the
    values found in OFA's VQA TSV files; the simpler ``min(1, c / 3)`` would give 0.33 / 0.67 / 1.0 instead).
    ``ref_dict.get(prediction, 0)`` in OFA's validation is then exactly the official per-question accuracy.
    Scores are rounded to 4 decimals.
    """
    counts = Counter(answers)
    n = len(answers)
    scores = {}
    for answer, count in counts.items():
        # a subset leaving out one of the `count` matching annotators has count - 1 matches
        total = count * min(1.0, (count - 1) / 3) + (n - count) * min(1.0, count / 3)
        scores[answer] = round(total / n, 4)
    return scores


def format_answers(scores: dict[str, float]) -> str:
    """``conf|!+answer&&...``, most confident first (ties in first-seen order); zero scores are dropped."""
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    return ANSWER_SEPARATOR.join(f"{conf}{CONF_SEPARATOR}{answer}" for answer, conf in ranked if conf > 0)


def _normalize_answer(answer: Any) -> str:
    """A human answer, lower-cased with whitespace collapsed (the answer text OFA's targets use)."""
    text = " ".join(str(answer).lower().split())
    if ANSWER_SEPARATOR in text or CONF_SEPARATOR in text:
        raise ValueError(f"answer {text!r} contains a column separator")
    return text


def vqa_entries(questions: Path, annotations: Path | None, images: Path) -> list[Entry | Malformed]:
    """Rows of VQAv2 questions (+ annotations; without them, for test-dev/test, the answers column is empty)."""
    qdata = load_json(questions)
    if not isinstance(qdata, dict) or not isinstance(qdata.get("questions"), list):
        raise ConvertError(f"{questions} has no 'questions' list (not a VQAv2 questions file)")
    subtype = str(qdata.get("data_subtype", ""))
    answers: dict[Any, str] = {}
    malformed: list[Entry | Malformed] = []
    if annotations is not None:
        adata = load_json(annotations)
        if not isinstance(adata, dict) or not isinstance(adata.get("annotations"), list):
            raise ConvertError(f"{annotations} has no 'annotations' list (not a VQAv2 annotations file)")
        for i, ann in enumerate(adata["annotations"]):
            try:
                human = [_normalize_answer(a["answer"]) for a in ann["answers"]]
                answers[ann["question_id"]] = format_answers(vqa_soft_scores(human))
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
                malformed.append(Malformed(f"annotations[{i}]", describe_error(err)))

    def build(q: dict) -> Entry:
        if annotations is not None and q["question_id"] not in answers:
            raise ValueError(f"question {q['question_id']} has no annotation")
        answer = answers.get(q["question_id"], "")
        columns = (str(q["question_id"]), str(q["image_id"]), str(q["question"]), answer, "", None)
        return Entry(f"question {q['question_id']}", _coco_image({}, images, q["image_id"], subtype), columns)

    return malformed + build_each(qdata["questions"], "questions", build)


class _DataOnlyUnpickler(pickle.Unpickler):
    """Loads plain data (dicts, lists, str, numbers) only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: the refs file may hold only plain data")


def load_refs(path: Path) -> list[dict]:
    """The refs of a refer-format file: ``refs(unc).p`` (pickle, read data-only) or a JSON export of that list.

    The original pickles were written by Python 2, hence ``encoding="latin1"`` for their byte strings.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        refs = load_json(path)
    else:
        try:
            refs = _DataOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
        except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
            raise ConvertError(f"cannot read refs from {path}: {err}") from None
    if not isinstance(refs, list):
        raise ConvertError(f"{path} does not hold a list of refs")
    return refs


def format_box(bbox: Sequence[Any]) -> str:
    """COCO ``[x, y, w, h]`` -> ``"x0,y0,x1,y1"`` (rounded to the 2 decimals COCO boxes are given in)."""
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise ValueError(f"negative box size in {list(bbox)}")
    return ",".join(str(round(v, 2)) for v in (x, y, x + w, y + h))


def refcoco_entries(refs: Path, instances: Path, images: Path, split: str) -> list[Entry | Malformed]:
    """One row per sentence of the refs in ``split`` (e.g. ``val``, ``testA``), boxed by their instance."""
    data = load_json(instances)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ConvertError(f"{instances} has no 'annotations' list (not a COCO instances file)")
    boxes = {ann["id"]: ann["bbox"] for ann in data["annotations"] if isinstance(ann, dict) and "id" in ann}
    files = _image_files(data.get("images", []), images)
    entries: list[Entry | Malformed] = []
    for i, ref in enumerate(load_refs(refs)):
        try:
            if ref["split"] != split:
                continue
            if ref["ann_id"] not in boxes:
                raise ValueError(f"no instance annotation with id {ref['ann_id']}")
            region = format_box(boxes[ref["ann_id"]])
            image = _coco_image(files, images, ref["image_id"])
            for sent in ref["sentences"]:
                columns = (str(sent["sent_id"]), str(ref["image_id"]), str(sent["sent"]), region, None)
                entries.append(Entry(f"refs[{i}] sent {sent['sent_id']}", image, columns))
        except (KeyError, TypeError, ValueError) as err:
            entries.append(Malformed(f"refs[{i}]", describe_error(err)))
    return entries
