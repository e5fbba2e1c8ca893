"""Converters from public dataset annotations to OFA's TSV files (``python -m data.convert``, see there)."""

from data.converters.coco import coco_caption_entries, refcoco_entries, vqa_entries, vqa_soft_scores
from data.converters.core import ConvertError, Entry, Malformed, Summary, write_tsv
from data.converters.local import folder_entries, snli_ve_entries

__all__ = [
    "ConvertError",
    "Entry",
    "Malformed",
    "Summary",
    "coco_caption_entries",
    "folder_entries",
    "refcoco_entries",
    "snli_ve_entries",
    "vqa_entries",
    "vqa_soft_scores",
    "write_tsv",
]
