"""`accelerate`: data parallel (DDP) or FSDP in several processes through `accelerate launch`
with a config generated into the run folder; on CPU the processes talk over gloo."""

from __future__ import annotations

from ragloop.core import RagloopError, hookimpl
from ragloop.plugins.backends.device import cuda_devices
from ragloop.plugins.backends.launch import (
    LaunchedBackend,
    accelerate_config,
    check_processes,
    launch,
    parallel_options,
)


class AccelerateBackend(LaunchedBackend):
    name = "accelerate"
    description = "Several processes (DDP, or FSDP with --fsdp) via `accelerate launch`; gloo on CPU."

    def check(self, job) -> None:
        opts = parallel_options(job)
        if opts.zero is not None:
            raise RagloopError("--zero needs --backend deepspeed")
        if opts.fsdp and job.device != "cuda":
            # accelerate shards with FSDP only on accelerators; on CPU it would quietly run
            # plain data parallel (MULTI_CPU) instead.
            raise RagloopError("--fsdp needs CUDA GPUs (accelerate runs FSDP only there); "
                               "drop --fsdp to train data-parallel over gloo on this CPU")
        check_processes(opts.processes, cuda_devices() if job.device == "cuda" else 0)
        accelerate_config(opts, job.device != "cuda")

    def run(self, method, job):
        self.check(job)
        cpu = job.device != "cuda"
        return launch(job, accelerate_config(parallel_options(job), cpu), cpu)


@hookimpl
def register_training_backends(register):
    register(AccelerateBackend)
