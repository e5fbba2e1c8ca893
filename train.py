"""Training entry point (torchrun-native trainer). Arrives with issue #4."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    sys.stderr.write("train.py: training is not implemented yet (issue #4: training engine)\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
