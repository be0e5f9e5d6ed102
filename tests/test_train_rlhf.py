"""`ragloop train --method rlhf`: a few RLOO/GRPO steps of a tiny policy against a tiny
reward adapter; rewards are logged and the LoRA weights move."""

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_train import nothing_written, one_line_error, run, tiny, write
from test_train_reward import train_reward


@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_rlhf_runs_steps_logs_rewards_and_moves_the_lora_weights(algorithm, tmp_path,
                                                                 ragloop_home):
    train_reward(tmp_path, steps=2)
    data = write(tmp_path / "more.jsonl", "pairs", 4)
    out = run("train", "--method", "rlhf", "--data", data, "--max-steps", 2, "--lr", "1e-2",
              "-o", "reward_adapter=rm", "-o", f"algorithm={algorithm}",
              "-o", "max_completion_length=8", "-o", "max_length=128", *tiny(),
              "--name", "policy", "--json").stdout
    result = json.loads(out)
    record = json.loads((Path(result["run_dir"]) / "run.json").read_text())
    rewards = [e["reward"] for e in record["log_history"] if "reward" in e]
    assert len(rewards) == 2 and all(math.isfinite(r) for r in rewards)
    assert record["metrics"]["prompts"] == 4        # one per distinct prompt, not per answer
    weights = load_file(ragloop_home / "adapters" / "policy" / "adapter_model.safetensors")
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and max(float(w.abs().max()) for w in lora_b) > 0


def test_rlhf_without_a_reward_model_is_one_line(tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs", 4)
    one_line_error(run("train", "--method", "rlhf", "--data", data, *tiny(), ok=False),
                   "train a reward model first: ragloop train --method reward")
    one_line_error(run("train", "--method", "rlhf", "--data", data, "-o", "reward_adapter=nope",
                       *tiny(), ok=False), "no reward adapter 'nope'")
    nothing_written(ragloop_home)


def test_rlhf_refuses_early_stopping_it_could_not_do(tmp_path, ragloop_home):
    train_reward(tmp_path, steps=1)
    data = write(tmp_path / "more.jsonl", "pairs", 10)    # enough rows for the held-out split
    def files():       # the database's own -wal and -shm files come and go with connections
        return sorted(p.name for p in ragloop_home.rglob("*")
                      if not p.name.endswith(("-wal", "-shm")))
    before = files()
    one_line_error(run("train", "--method", "rlhf", "--data", data, "--early-stopping", "2",
                       "-o", "reward_adapter=rm", *tiny(), ok=False),
                   "rlhf has no held-out loss to stop on (it scores new answers instead); "
                   "leave out --early-stopping")
    assert files() == before
