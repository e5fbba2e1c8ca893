"""Score caption predictions with the COCO caption toolkit (BLEU-1..4, METEOR, ROUGE-L, CIDEr, SPICE).

``python coco_eval.py results/caption/test_predict.json dataset/caption_data/test_caption_coco_format.json``.
This is the last step of OFA's caption evaluation (spec §4.1): ``evaluate.py`` writes
``[{"image_id": ..., "caption": ...}]`` and the official ``pycocoevalcap`` scorers, restricted to the
predicted images, turn it into the numbers reported in the paper. PTB tokenisation, METEOR and SPICE run
Java, so ``java`` must be on PATH.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def evaluate(predictions: Path, references: Path) -> dict[str, float]:
    from pycocoevalcap.eval import COCOEvalCap
    from pycocotools.coco import COCO

    coco = COCO(str(references))
    results = coco.loadRes(str(predictions))
    scorer = COCOEvalCap(coco, results)
    scorer.params["image_id"] = results.getImgIds()  # score only the predicted images
    scorer.evaluate()
    return dict(scorer.eval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path, help="evaluate.py's <split>_predict.json")
    parser.add_argument("references", type=Path, help="COCO-format references, e.g. test_caption_coco_format.json")
    parser.add_argument("--out", type=Path, help="also write the scores here as JSON")
    args = parser.parse_args(argv)
    if shutil.which("java") is None:
        parser.error("the COCO caption toolkit needs Java (PTB tokenizer, METEOR, SPICE); install a JRE first")
    scores = evaluate(args.predictions, args.references)
    text = json.dumps(scores, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
