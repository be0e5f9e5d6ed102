"""`train --method sft+dpo` (DPO with an SFT term on the chosen answers, optional SFT warm-up
steps) and dpo's `sft_weight`, on a tiny random model.

At the first step the LoRA adapter is still the base (its B matrices start at zero), so
plain DPO's loss is exactly log 2, and any SFT term shows as what is added to it. Every run
here holds out 2 of 8 pairs and trains one batch of the other 6, so the first step sees the
same rows in every run."""

import json
import math
from functools import cache
from pathlib import Path

import pytest
from cli_helpers import run
from test_train import nothing_written, one_line_error, tiny, write

SAME = ["--eval-split", "0.25", "--batch-size", "6", "--lr", "1e-3", "-o", "max_length=64"]


def train(tmp_path, method, *extra):
    data = write(tmp_path / "p.jsonl", "pairs")
    out = run("train", "--method", method, "--data", data, *SAME, *tiny(), *extra,
              "--json").stdout
    result = json.loads(out)
    record = json.loads((Path(result["run_dir"]) / "run.json").read_text())
    return result, record


def losses(record):
    return [e["loss"] for e in record["log_history"] if "loss" in e]


@cache
def first_loss(home: Path, method: str, *options: str) -> float:
    """The first step's loss of a one-step run (cached: several tests compare the same runs)."""
    import os
    old = os.environ.get("RAGLOOP_HOME")
    os.environ["RAGLOOP_HOME"] = str(home)
    try:
        _, record = train(home, method, "--max-steps", "1",
                          *[x for o in options for x in ("-o", o)])
    finally:
        if old is None:
            os.environ.pop("RAGLOOP_HOME", None)
        else:
            os.environ["RAGLOOP_HOME"] = old
    return losses(record)[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("recipe")


def test_the_sft_term_is_added_to_the_dpo_loss_with_its_weight(home):
    plain = first_loss(home, "dpo")
    assert plain == pytest.approx(math.log(2), abs=1e-4)
    assert first_loss(home, "dpo", "sft_weight=0") == pytest.approx(plain, abs=1e-6)
    one = first_loss(home, "sft+dpo")                      # sft_weight defaults to 1 here
    two = first_loss(home, "sft+dpo", "sft_weight=2")
    nll = one - plain
    # A random tiny model gives its answers' tokens about 1/vocabulary each: a large NLL.
    assert nll > 1.0
    assert two - plain == pytest.approx(2 * nll, rel=1e-4)
    assert first_loss(home, "dpo", "sft_weight=1") == pytest.approx(one, rel=1e-5)


def test_the_sft_term_is_the_same_with_the_shared_prompt_forward_and_trls(home):
    shared = first_loss(home, "sft+dpo", "sft_weight=2")
    trl_own = first_loss(home, "sft+dpo", "sft_weight=2", "share_prompts=false")
    assert shared == pytest.approx(trl_own, rel=1e-4)


def test_sft_dpo_trains_end_to_end_with_warm_up_steps(home, tmp_path, ragloop_home):
    from safetensors.torch import load_file
    result, record = train(tmp_path, "sft+dpo", "--max-steps", "3", "-o", "sft_steps=1",
                           "--name", "recipe")
    assert record["status"] == "succeeded" and record["method"] == "sft+dpo"
    assert (record["options"]["sft_weight"], record["options"]["sft_steps"]) == (1.0, 1)
    first, *rest = losses(record)
    # The warm-up step trains the SFT term alone: the sft+dpo first loss without log 2.
    assert first == pytest.approx(first_loss(home, "sft+dpo") - math.log(2), rel=1e-4)
    assert len(rest) == 2 and all(math.isfinite(x) for x in rest)
    metrics = result["metrics"]
    assert 0 <= metrics["eval_rewards/accuracies"] <= 1 and metrics["eval_loss"] > 0
    weights = load_file(ragloop_home / "adapters" / "recipe" / "adapter_model.safetensors")
    assert max(float(w.abs().max()) for k, w in weights.items() if "lora_B" in k) > 0
    meta = json.loads((ragloop_home / "adapters" / "recipe" / "ragloop-adapter.json").read_text())
    assert meta["method"] == "sft+dpo"


def test_the_default_adapter_name_of_sft_dpo_is_a_valid_name(tmp_path, ragloop_home):
    from ragloop.core.pipeline.adapters import check_name
    from ragloop.core.pipeline.training import _free_name
    from ragloop.core.workspace import Workspace
    name = _free_name(Workspace(ragloop_home), None, "sft+dpo")
    assert name.startswith("sft-dpo-") and check_name(name) == name


def test_bad_recipe_options_are_one_line_errors(tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs")
    one_line_error(run("train", "--method", "sft+dpo", "--data", data, "--max-steps", "2",
                       "-o", "sft_steps=2", *tiny(), ok=False),
                   "sft_steps=2 leaves none of the run's 2 steps")
    one_line_error(run("train", "--method", "dpo", "--data", data, "-o", "sft_weight=-1",
                       *tiny(), ok=False), "sft_weight must be 0 or more")
    one_line_error(run("train", "--method", "sft+dpo", "--data", data, "-o", "loss_type=sft",
                       *tiny(), ok=False), "set its weight with sft_weight")
    nothing_written(ragloop_home)
