"""Training backends: generated and shipped accelerate/DeepSpeed configs, and the refusals
that come before anything is written (no CUDA here, so DeepSpeed and FSDP-on-GPU are only
checked this far)."""

from pathlib import Path

import pytest
import yaml
from test_train import nothing_written, one_line_error, run, tiny, write

from ragloop.core.errors import RagloopError
from ragloop.plugins.backends.launch import (
    ParallelOptions,
    accelerate_config,
    cores,
    deepspeed_config,
    validate_accelerate_config,
)

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
