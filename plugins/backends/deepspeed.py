"""`deepspeed`: ZeRO stage 2 or 3 (optionally offloading to CPU memory) through accelerate's
DeepSpeed integration, with a generated and validated config. CUDA only."""

from __future__ import annotations

import importlib.util

from ragloop.core import RagloopError, hookimpl
from ragloop.plugins.backends.device import cuda_devices
from ragloop.plugins.backends.launch import (
    LaunchedBackend,
    accelerate_config,
    check_processes,
    deepspeed_config,
    launch,
    parallel_options,
)


class DeepSpeedBackend(LaunchedBackend):
    name = "deepspeed"
    description = "DeepSpeed ZeRO-2/3 (--zero, --offload) via accelerate; needs CUDA."

    def check(self, job) -> None:
        """Everything that can be known before launching; runs before anything is written."""
        opts = parallel_options(job)
        if opts.fsdp:
            raise RagloopError("--fsdp needs --backend accelerate; deepspeed shards with --zero 3")
        accelerate_config(opts, cpu=False, deepspeed=deepspeed_config(opts.zero or 2, opts.offload))
        # DeepSpeed's ZeRO kernels and its launcher need CUDA; on a CPU it would fail minutes
        # in, after loading the model, with a compiler or NCCL error.
        devices = cuda_devices()
        if job.device != "cuda" or not devices:
            raise RagloopError("--backend deepspeed needs CUDA, and this machine has no CUDA "
                               "device; use --backend accelerate (data parallel over gloo) on CPU")
        if importlib.util.find_spec("deepspeed") is None:
            raise RagloopError("--backend deepspeed needs the deepspeed package: "
                               "pip install deepspeed")
        check_processes(opts.processes, devices)

    def run(self, method, job):
        self.check(job)
        opts = parallel_options(job)
        ds = deepspeed_config(opts.zero or 2, opts.offload)
        return launch(job, accelerate_config(opts, cpu=False, deepspeed=ds), cpu=False)


@hookimpl
def register_training_backends(register):
    register(DeepSpeedBackend)
