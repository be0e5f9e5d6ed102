"""`ragloop train --compress NAME` (QLoRA): what is refused, and before what; and that the job,
the run record, the adapter's metadata and `--resume` carry the compressor.

This machine has no GPU, so bitsandbytes itself never loads here (tests/gpu/qlora_smoke.py
runs the CUDA path). The path from the flag to the loaded base is driven instead by a
one-off compressor plugin that, like bitsandbytes, quantizes "as the model loads" through
`load_kwargs` but accepts the CPU: everything around the quantization is then the real
code, from the CLI to the saved adapter."""

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_helpers import run
from test_train import FAST, nothing_written, one_line_error, tiny, write
from tiny_models import tiny_causal_lm

from ragloop.core import components as kinds
from ragloop.core.hookspecs import hookimpl
from ragloop.core.pipeline.training import prepare_resume
from ragloop.core.plugins import load_plugins, pm
from ragloop.core.workspace import Workspace

NO_CUDA = "bitsandbytes 4-bit/8-bit loading needs a CUDA GPU; this machine has none"


def has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


cpu_only = pytest.mark.skipif("has_cuda()", reason="checks the refusal a machine without CUDA "
                                                   "gives")


class LoadsOnCpu(kinds.Compressor):
    """A compressor that works while the model loads (as bitsandbytes does) but on the CPU:
    it asks `from_pretrained` to place the weights, and quantizes nothing."""
    name = "test-load-cpu"
    kind = "quantize"

    def load_kwargs(self, device: str) -> dict:
        self.summary = f"placed on {device} as it loads"
        return {"device_map": {"": device}}

    def compress(self, model):
        return model


class Plugin:
    @hookimpl
    def register_compressors(self, register):
        register(LoadsOnCpu)


@contextmanager
def loads_on_cpu():
    load_plugins()
    pm.register(Plugin(), name="test-qlora-plugin")
    try:
        yield LoadsOnCpu.name
    finally:
        pm.unregister(name="test-qlora-plugin")


def train(data, *extra, ok=False):
    return run("train", "--data", data, "--max-steps", "1", "-o", "max_length=64", *tiny(),
               *extra, ok=ok)


# ---- refusals ------------------------------------------------------------------------------

@cpu_only
@pytest.mark.parametrize("method", ["bnb-nf4", "bnb-int8"])
def test_without_cuda_bitsandbytes_is_refused_in_one_line_before_anything(method, tmp_path,
                                                                         ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs", 4)
    result = train(data, "--method", "dpo", "--compress", method)
    assert one_line_error(result) == f"Error: {NO_CUDA}"
    assert "Traceback" not in result.output
    assert "bitsandbytes" not in sys.modules
    nothing_written(ragloop_home)


@cpu_only
def test_the_installed_command_refuses_without_cuda_with_exit_code_1(tmp_path):
    """The real `ragloop` executable, as a user runs it: exit 1, one line on stderr, no
    run folder or adapter."""
    import os
    import subprocess
    home = tmp_path / "home"
    data = write(tmp_path / "p.jsonl", "pairs", 4)
    ragloop = Path(sys.executable).with_name("ragloop")
    done = subprocess.run([str(ragloop), "--home", str(home), "train", "--data", str(data),
                           "--compress", "bnb-nf4", "--max-steps", "1",
                           "--model", str(tiny_causal_lm())],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS":
                                                               "ignore"}, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stdout == "" and done.stderr.strip().splitlines()[-1] == f"Error: {NO_CUDA}"
    assert "Traceback" not in done.stderr
    nothing_written(home)


def test_full_training_of_a_quantized_base_is_refused(tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs", 4)
    one_line_error(train(data, "--full", "--compress", "bnb-nf4"), "cannot be fully trained",
                   "drop --full")
    nothing_written(ragloop_home)


@pytest.mark.parametrize("method", ["torchao-int8", "torchao-int4", "prune-magnitude",
                                    "prune-structured"])
def test_a_compressor_that_cannot_carry_training_is_refused_naming_those_that_can(
        method, tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs", 4)
    one_line_error(train(data, "--compress", method), f"--compress {method} cannot train",
                   "use one of: bnb-nf4, bnb-int8")
    nothing_written(ragloop_home)


def test_an_unknown_compressor_lists_the_installed_ones(tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs", 4)
    one_line_error(train(data, "--compress", "nf3"), "unknown compressor 'nf3'", "bnb-nf4")
    nothing_written(ragloop_home)


@pytest.mark.parametrize("flags,needle", [
    (["--backend", "deepspeed"], "local backend, not deepspeed; drop --backend deepspeed"),
    (["--backend", "accelerate"], "drop --backend accelerate"),
    (["--processes", "2"], "one process; drop --processes 2"),
    (["--fsdp"], "drop --fsdp"),
])
def test_several_processes_or_another_backend_are_refused(flags, needle, tmp_path,
                                                          ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs", 4)
    one_line_error(train(data, "--compress", "bnb-nf4", *flags), needle)
    nothing_written(ragloop_home)


def test_a_method_that_builds_its_own_trainer_is_refused(tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs", 4)
    with loads_on_cpu() as name:
        one_line_error(train(data, "--method", "reward", "--compress", name),
                       "method reward cannot train on a quantized base",
                       "dpo, kto, orpo, sft")
    nothing_written(ragloop_home)


# ---- what carries it ------------------------------------------------------------------------

def test_the_job_record_adapter_and_resume_carry_the_compressor(tmp_path, ragloop_home):
    from ragloop.plugins.generators.transformers import TransformersConfig, TransformersGenerator
    data = write(tmp_path / "p.jsonl", "pairs", 4)
    with loads_on_cpu() as name:
        out = run("train", "--method", "dpo", "--data", data, *FAST, *tiny(), "--compress",
                  name, "--name", "q", "--save-steps", "1", "--json").stdout
        result = json.loads(out)
        run_json = Path(result["run_dir"]) / "run.json"
        record = json.loads(run_json.read_text())
        assert record["status"] == "succeeded" and record["compress"] == name
        assert any(f"--compress {name}" in note and "QLoRA" in note for note in record["notes"])
        meta = json.loads(run("adapters", "show", "q").stdout)
        assert (meta["compress"], meta["kind"]) == (name, "lora")

        # Plain LoRA weights: the generator loads them on the full-precision base.
        generator = TransformersGenerator(TransformersConfig(model=str(tiny_causal_lm()),
                                                             adapter="q"),
                                          workspace=Workspace(ragloop_home))
        text = "".join(generator.generate([{"role": "user", "content": "capital?"}],
                                          max_new_tokens=2))
        assert generator.adapter_id.startswith("q@") and isinstance(text, str)

        # A run that failed after its checkpoints resumes with its own --compress, and
        # refuses another.
        run_json.write_text(json.dumps({**record, "status": "failed"}))
        run("adapters", "rm", "q")
        job = prepare_resume(Workspace(ragloop_home), result["run_id"])
        assert job.compress == name and job.resume_from
        one_line_error(run("train", "--resume", result["run_id"], "--compress", "bnb-int8",
                           ok=False), f"trained with --compress {name}", "drop --compress")


def test_a_run_without_compress_records_none(tmp_path, ragloop_home):
    data = write(tmp_path / "s.jsonl", "sft", 4)
    result = json.loads(train(data, "--method", "sft", "--name", "plain", "--json", ok=True)
                        .stdout)
    record = json.loads((Path(result["run_dir"]) / "run.json").read_text())
    assert record["compress"] is None
