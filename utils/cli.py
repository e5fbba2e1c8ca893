"""One-line errors for the command lines: ``train.py`` and ``evaluate.py`` report a problem the user can fix as
``PROG: error: MESSAGE`` on stderr with exit status 1, instead of a traceback.

Reported this way: bad data and settings (``ValueError``, which includes ``BadRowError``, refused or
mismatched checkpoints and bad flag values), files (``OSError``: missing, unwritable, disk full), too many bad
rows and a stopped run (``FloatingPointError``: NaN/inf updates, fp16 loss scale). Anything else keeps its
traceback (a bug to report); a reported error's traceback is logged at DEBUG level. An exception re-raised from
a DataLoader worker carries the worker's traceback in its message: its last line is the original message.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Sequence

from data.loading import TooManyBadRowsError

logger = logging.getLogger(__name__)

USER_ERRORS = (ValueError, OSError, FloatingPointError, TooManyBadRowsError)


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a DataLoader worker's traceback reduced to its last line)."""
    text = str(err)
    if "Original Traceback" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = re.sub(r"^[\w.]+: ", "", lines[-1])  # "data.tsv.BadRowError: bad row in ..." -> "bad row in ..."
    return " ".join(text.split()) or type(err).__name__


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """``main(argv)``, with user errors printed as one line (exit status 1)."""
    try:
        return main(argv)
    except USER_ERRORS as err:
        logger.debug("%s failed", prog, exc_info=True)
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 1
