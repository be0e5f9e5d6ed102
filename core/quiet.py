"""What libraries do that is for their authors, not for ragloop's users: log noise, and
calls home."""

from __future__ import annotations

import logging
import os
import sys

# transformers and peft import torchao whenever it is installed; torchao then logs that a
# CPU-only torch cannot load its CUDA kernels, and torch adds deprecation notes on its enums.
NOISY = ("torchao", "torch.utils._pytree")


def quiet_library_logs(*more: str) -> None:
    """Only errors from the noisy libraries (and from `more` logger names)."""
    for name in (*NOISY, *more):
        logging.getLogger(name).setLevel(logging.ERROR)


def no_library_bars() -> None:
    """The command line shows its own progress (core/cli/progress.py): transformers' and
    huggingface_hub's tqdm bars ("Writing model shards", "Loading weights") would print over
    it, or as carriage-return debris in a log. Both read this when first imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def no_call_home() -> None:
    """Telemetry off, always: ragloop works offline and sends nothing. TRL pings the hub
    whenever a trainer starts (through huggingface_hub's send_telemetry), which honours
    HF_HUB_DISABLE_TELEMETRY, read once when huggingface_hub is imported, so this runs when
    ragloop.core is imported; the environment also carries it to the processes that the
    accelerate and deepspeed backends start. (report_to="none" keeps W&B and the like out.)"""
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:       # imported before ragloop: it has read the environment
        constants.HF_HUB_DISABLE_TELEMETRY = True
