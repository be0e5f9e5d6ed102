"""`train --search N`: Optuna trials of a tiny random model, the best one kept as the adapter,
the trials recorded in the run folder, the same trials sampled again with the same --seed, and bad
input as one line with nothing written."""

import json
import subprocess
import sys
from pathlib import Path

from cli_helpers import run
from test_train import nothing_written, one_line_error, tiny, write

FAST = ["-o", "max_length=64", "--batch-size", "6", "--eval-split", "0.25"]
# One step per trial keeps the test short; lr and beta are searched.
SPACE = "learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\nbeta: [0.1, 0.5]\nmax_steps: 1\n"


def search(tmp_path, *extra):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    data = write(tmp_path / "p.jsonl", "pairs")
    result = run("train", "--method", "sft+dpo", "--data", data, "--search", "2",
                 "--search-space", space, *FAST, *tiny(), *extra)
    run_dir = Path(result.stdout.split("Run folder: ")[1].split()[0])
    return result, run_dir


def test_search_runs_the_trials_records_them_and_keeps_the_best(tmp_path, ragloop_home):
    result, run_dir = search(tmp_path, "--name", "best")
    found = json.loads((run_dir / "search.json").read_text())
    trials = found["trials"]
    assert [t["number"] for t in trials] == [1, 2]
    assert all(t["state"] == "complete" and 0 <= t["value"] <= 1 for t in trials)
    assert all(t["params"]["max_steps"] == 1 and t["params"]["beta"] in (0.1, 0.5)
               and 1e-4 <= t["params"]["learning_rate"] <= 1e-2 for t in trials)
    assert found["metric"] == "eval_rewards/accuracies" and found["seed"] == 42
    best = max(trials, key=lambda t: (t["value"], -t["metrics"]["eval_loss"]))
    assert found["best"] == best["number"]
    # A line per trial, then the kept one.
    for t in trials:
        assert f"Trial {t['number']}/2 (" in result.stderr
    assert f"Kept trial {best['number']} of 2" in result.stdout
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "succeeded" and record["search"]["best"] == best["number"]
    assert record["settings"]["learning_rate"] == best["params"]["learning_rate"]
    assert record["options"]["beta"] == best["params"]["beta"]
    meta = json.loads((ragloop_home / "adapters" / "best" / "ragloop-adapter.json").read_text())
    assert meta["search"]["params"] == best["params"] and meta["method"] == "sft+dpo"
    assert meta["metrics"]["eval_rewards/accuracies"] == best["value"]
    assert (ragloop_home / "adapters" / "best" / "adapter_model.safetensors").exists()
    assert not (run_dir / "trials").exists()     # the best one is the adapter now
    one_line_error(run("train", "--resume", record["id"], ok=False), "not resumed")


def refused_search(tmp_path, home, space_text, *extra):
    """A search whose every trial the method refuses before training (one epoch is 3 steps,
    so the command passes; a trial's single step leaves no DPO step): the sampling and the
    record without the cost of training. Returns search.json."""
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    data = write(tmp_path / "p.jsonl", "pairs")
    message = one_line_error(run("train", "--method", "sft+dpo", "--data", data, "--search", "2",
                                 "--search-space", space, "-o", "sft_steps=1", *FAST,
                                 "--batch-size", "2", *tiny(), *extra, ok=False),
                             "every one of the 2 trials failed")
    assert "sft_steps=1 leaves none of the run's 1 steps" in message
    newest = max((home / "runs").iterdir())
    assert json.loads((newest / "run.json").read_text())["status"] == "failed"
    return json.loads((newest / "search.json").read_text())


def test_the_same_seed_samples_the_same_trials(tmp_path, ragloop_home):
    space = "max_steps: 1\nlearning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}\n"
    runs = [refused_search(tmp_path, ragloop_home, space, *seed)
            for seed in ((), (), ("--seed", "7"))]
    params = [[t["params"] for t in found["trials"]] for found in runs]
    assert params[0] == params[1] and params[0] != params[2]
    assert params[0][0] != params[0][1]


def test_search_bad_input_is_one_line_and_writes_nothing(tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs")
    few = write(tmp_path / "few.jsonl", "pairs", 3)
    base = ["train", "--data", data, *tiny()]
    result = run(*base, "--search", "0", ok=False)
    assert result.exit_code == 2 and "Invalid value for '--search'" in result.output
    one_line_error(run(*base, "--search", "2", "--eval-split", "0", ok=False),
                   "give --eval-split above 0")
    one_line_error(run("train", "--data", few, *tiny(), "--search", "2", ok=False),
                   "--eval-split 0.2 of 3 pairs leaves 0 for evaluation")
    one_line_error(run(*base, "--method", "sft", "--search", "2", ok=False),
                   "sft does not", "dpo")
    space = tmp_path / "bad.yaml"
    space.write_text("temperature: {low: 0.1, high: 1}\n")
    one_line_error(run(*base, "--search", "2", "--search-space", space, ok=False),
                   "'temperature' is not a setting or option of dpo", "learning_rate")
    space.write_text("beta: {low: 0.5, high: 0.1}\n")
    one_line_error(run(*base, "--search", "2", "--search-space", space, ok=False),
                   "beta needs numbers low <= high")
    space.write_text("learning_rate: abc\n")
    one_line_error(run(*base, "--search", "2", "--search-space", space, ok=False),
                   "learning_rate must be a number or a list of numbers")
    space.write_text("beta: [0.1, 0.2]\n")
    one_line_error(run(*base, "--search", "2", "--search-space", space, "-o", "beta=0.3",
                       ok=False), "searches beta, which the command line also sets")
    one_line_error(run(*base, "--search-space", space, ok=False), "give --search too")
    one_line_error(run(*base, "--search", "2", "--backend", "accelerate", ok=False),
                   "local backend")
    nothing_written(ragloop_home)


MISSING = """
import sys
sys.modules["optuna"] = None       # how Python itself marks a module that cannot be imported
from ragloop.core.cli import cli
cli.main(sys.argv[1:], prog_name="ragloop")
"""


def test_search_without_optuna_names_the_extra(tmp_path, ragloop_home):
    data = write(tmp_path / "p.jsonl", "pairs")
    result = subprocess.run([sys.executable, "-c", MISSING, "train", "--data", str(data),
                             "--search", "2", *tiny()], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "ragloop[search]" in last and "Traceback" not in \
        result.stderr
    nothing_written(ragloop_home)


def test_trials_a_method_refuses_are_recorded_and_every_one_failing_fails_the_run(
        tmp_path, ragloop_home):
    found = refused_search(tmp_path, ragloop_home, "max_steps: 1\nbeta: [0.1, 0.2]\n")
    assert [t["state"] for t in found["trials"]] == ["failed", "failed"]
    assert all("leaves none" in t["error"] for t in found["trials"])
    assert not (ragloop_home / "adapters").exists() or not any(
        (ragloop_home / "adapters").iterdir())
