"""A checkpoint writer loop for the SIGKILL test; kept tiny so fork-server children start instantly."""

from __future__ import annotations

import torch

from utils.checkpoint import save_checkpoint_file


def write_forever(path: str, ready) -> None:
    state = {"model": {f"w{i}": torch.full((256, 256), float(i)) for i in range(24)}, "extra_state": {"n": 0}}
    ready.set()
    n = 0
    while True:
        n += 1
        state["extra_state"]["n"] = n
        save_checkpoint_file(state, path)
