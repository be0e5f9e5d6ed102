"""Training backends: generated and shipped accelerate/DeepSpeed configs, and the refusals
that come before anything is written (no CUDA here, so DeepSpeed and FSDP-on-GPU are only
checked this far)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_hooks import registered
from test_train import nothing_written, one_line_error, run, tiny, write

from ragloop.core import TrainingBackend, hookimpl, registry
from ragloop.core.errors import RagloopError
from ragloop.plugins.backends import device
from ragloop.plugins.backends.launch import (
    ParallelOptions,
    accelerate_config,
    cores,
    deepspeed_config,
    options_from,
    parallel_options,
    validate_accelerate_config,
)

ONE_PROCESS = {"processes": 1, "fsdp": False, "zero": None, "offload": False}

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "accelerate"


@pytest.mark.parametrize("name", ["single_gpu", "multi_gpu", "fsdp", "deepspeed_zero3"])
def test_the_example_configs_parse_and_validate(name):
    config = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    validate_accelerate_config(config, name)
    expected = {"single_gpu": "NO", "multi_gpu": "MULTI_GPU", "fsdp": "FSDP",
                "deepspeed_zero3": "DEEPSPEED"}[name]
    assert config["distributed_type"] == expected


def test_generated_configs():
    ddp = accelerate_config(ParallelOptions(processes=2), cpu=True)
    assert (ddp["distributed_type"], ddp["num_processes"]) == ("MULTI_GPU", 2)
    fsdp = accelerate_config(ParallelOptions(processes=2, fsdp=True), cpu=False)
    assert fsdp["fsdp_config"]["fsdp_version"] == 2
    ds = deepspeed_config(3, offload=True)
    assert ds["offload_param_device"] == ds["offload_optimizer_device"] == "cpu"
    full = accelerate_config(ParallelOptions(processes=2, zero=3), cpu=False, deepspeed=ds)
    assert full["deepspeed_config"]["zero_stage"] == 3
    with pytest.raises(RagloopError, match="--zero must be 2 or 3"):
        deepspeed_config(1, False)
    with pytest.raises(RagloopError, match="distributed_type 'GPU'"):
        validate_accelerate_config({**ddp, "distributed_type": "GPU"})
    with pytest.raises(RagloopError, match="unknown keys: zero_stag"):
        validate_accelerate_config({**full, "deepspeed_config": {"zero_stag": 3}})


def _train(tmp_path, *extra):
    data = write(tmp_path / "pairs.jsonl", "pairs", 4)
    return run("train", "--data", data, "--max-steps", "1", "-o", "max_length=64", *tiny(),
               *extra, ok=False)


def test_deepspeed_without_cuda_stops_before_launching(tmp_path, ragloop_home):
    result = _train(tmp_path, "--backend", "deepspeed", "--zero", "3", "--offload")
    message = one_line_error(result, "needs CUDA", "--backend accelerate")
    assert "--fsdp" not in message          # accelerate refuses --fsdp without CUDA too
    nothing_written(ragloop_home)


def test_fsdp_without_cuda_stops_before_launching(tmp_path, ragloop_home):
    # accelerate would run plain DDP instead (tested: its state says MULTI_CPU with --fsdp).
    result = _train(tmp_path, "--backend", "accelerate", "--processes", "2", "--fsdp")
    one_line_error(result, "--fsdp needs CUDA GPUs", "drop --fsdp")
    nothing_written(ragloop_home)


def test_more_processes_than_cores_is_refused(tmp_path, ragloop_home):
    result = _train(tmp_path, "--backend", "accelerate", "--processes", str(cores() + 1))
    one_line_error(result, f"more than this machine's {cores()} CPU cores")
    nothing_written(ragloop_home)


@pytest.mark.parametrize("flags,needle", [
    (["--processes", "2"], "need --backend accelerate or deepspeed"),
    (["--backend", "accelerate", "--zero", "2"], "--zero needs --backend deepspeed"),
])
def test_parallel_flags_need_the_right_backend(flags, needle, tmp_path, ragloop_home):
    one_line_error(_train(tmp_path, *flags), needle)
    nothing_written(ragloop_home)


# ---- what core asks of a backend: its device, its launch flags, its refusals -------------

def test_a_backend_that_takes_no_launch_flags_refuses_them():
    backend = TrainingBackend()
    assert backend.pick_device() == ("cpu", "fp32")       # core looks at no GPU itself
    backend.configure(SimpleNamespace(), ONE_PROCESS)
    for flags in ({"processes": 2}, {"fsdp": True}, {"zero": "2"}, {"offload": True}):
        with pytest.raises(RagloopError, match="^--processes, --fsdp, --zero and --offload "
                                               "need --backend accelerate or deepspeed$"):
            backend.configure(SimpleNamespace(), {**ONE_PROCESS, **flags})


def test_the_launched_backends_keep_the_flags_as_parallel_options():
    assert options_from({"processes": 2, "fsdp": False, "zero": "3", "offload": True}) == \
        ParallelOptions(processes=2, fsdp=False, zero=3, offload=True)
    assert options_from({}) == ParallelOptions()
    for name in ("accelerate", "deepspeed"):
        job = SimpleNamespace(parallel=None)
        assert parallel_options(job) == ParallelOptions()
        registry.get_training_backend(name)().configure(job, {**ONE_PROCESS, "zero": "2"})
        assert job.parallel == ParallelOptions(zero=2)


@pytest.mark.parametrize("cuda,native,expected", [
    (False, False, ("cpu", "fp32")), (True, True, ("cuda", "bf16")), (True, False, ("cuda", "fp32")),
])
def test_the_built_in_backends_pick_cuda_and_bf16_only_where_native(cuda, native, expected,
                                                                  monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native or including_emulation)
    for name in ("local", "accelerate", "deepspeed"):
        assert registry.get_training_backend(name)().pick_device() == expected
    assert device.pick_device() == expected


class Recorder(TrainingBackend):
    """Says it trains on CUDA in bf16, keeps the flags it was handed, and refuses to run."""
    name = "test-recorder"
    seen: list = []

    def pick_device(self):
        return "cuda", "bf16"

    def configure(self, job, flags):
        self.seen.append(dict(flags))
        job.parallel = flags

    def check(self, job):
        self.seen.append((job.device, job.precision, job.parallel))
        raise RagloopError("test-recorder refuses")


class RecorderPlugin:
    @hookimpl
    def register_training_backends(self, register):
        register(Recorder)


def test_train_hands_the_flags_as_given_to_the_backend_it_names(tmp_path, ragloop_home):
    Recorder.seen = []
    with registered(RecorderPlugin()):
        result = _train(tmp_path, "--backend", "test-recorder", "--processes", "2",
                        "--zero", "3", "--offload")
    one_line_error(result, "test-recorder refuses")
    flags = {"processes": 2, "fsdp": False, "zero": "3", "offload": True}
    assert Recorder.seen == [flags, ("cuda", "bf16", flags)]
    nothing_written(ragloop_home)
