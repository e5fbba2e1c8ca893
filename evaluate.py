"""Evaluation entry point (checkpoint + task -> metrics). Arrives with issue #5."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    sys.stderr.write("evaluate.py: evaluation is not implemented yet (issue #5: vision-language tasks)\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
