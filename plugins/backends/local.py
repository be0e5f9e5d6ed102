"""`local`: runs the training method in this process, on this machine."""

from __future__ import annotations

from ragloop.core import TrainingBackend, hookimpl
from ragloop.plugins.backends.device import pick_device


class LocalBackend(TrainingBackend):
    name = "local"
    description = "Runs the method in this process (CUDA if available, else CPU)."

    def pick_device(self) -> tuple[str, str]:
        return pick_device()

    # configure: the base class's, which refuses --processes, --fsdp, --zero and --offload.

    def run(self, method, job):
        return method.train(job)


@hookimpl
def register_training_backends(register):
    register(LocalBackend)
