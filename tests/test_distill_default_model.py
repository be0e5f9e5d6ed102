"""The first example of docs/distillation.md, end to end: an adapter trained on the default
(packaged) model is the teacher, the packaged model the student, the workspace's logged
questions the prompts. A tiny model stands in for the converted SmolLM2 (its folder and
marker are what a conversion of the installed GGUF leaves in the workspace). `distill` runs
as a real process, so its stderr is exactly what a user sees."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from cli_helpers import emb, run
from test_model_identity import fake_conversion
from test_train import one_line_error, write
from tiny_models import tiny_causal_lm

from ragloop.core.workspace import Workspace
from ragloop.plugins.hf.gguf import PACKAGED_MODEL

RAGLOOP = str(Path(sys.executable).with_name("ragloop"))
TQDM_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|it/s\]")


def test_an_adapter_of_the_default_model_teaches_the_default_model(tmp_path, ragloop_home):
    ws = Workspace(ragloop_home)
    fp = fake_conversion(ws, with_id=False)          # a workspace converted by older ragloop
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Paris is the capital of France. Berlin is in Germany.\n")
    run("index", docs, *emb())
    run("ask", "What is the capital of France?", "--max-new-tokens", "4")
    run("train", "--method", "sft", "--data", write(tmp_path / "sft.jsonl", "sft", 4),
        "--max-steps", "1", "-o", "max_length=64", "--name", "my-dpo-adapter")

    env = {**os.environ, "RAGLOOP_PROGRESS_SECONDS": "0"}
    done = subprocess.run(
        [RAGLOOP, "distill", "--teacher", "my-dpo-adapter", "--student", PACKAGED_MODEL,
         "--max-steps", "2", "--max-new-tokens", "8", "--name", "distilled"],
        env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Distilled my-dpo-adapter into SmolLM2-135M-Instruct" in done.stdout
    # Progress is ragloop's own lines; no library bars or deprecation notes.
    assert "Teacher answering 1 prompts" in done.stderr
    assert not TQDM_BAR.search(done.stderr), done.stderr
    assert "FutureWarning" not in done.stderr and "warnings.warn" not in done.stderr

    teacher = json.loads((ws.adapters_dir / "my-dpo-adapter" / "ragloop-adapter.json").read_text())
    student = json.loads((ws.adapters_dir / "distilled" / "ragloop-adapter.json").read_text())
    assert teacher["base_model_id"] == student["base_model_id"] == f"{PACKAGED_MODEL}@{fp}"
    lineage = student["distillation"]
    assert lineage["teacher"] == "my-dpo-adapter" and lineage["questions"] == "workspace questions"
    assert Path(lineage["teacher_model"]) == ws.models_dir / PACKAGED_MODEL

    # `ask` takes the adapter on its base folder too, and still refuses it on another model.
    folder = ws.models_dir / PACKAGED_MODEL
    run("ask", "--adapter", "my-dpo-adapter", "-o", f"model={folder}", "capital?",
        "--max-new-tokens", "2")
    refused = run("ask", "--adapter", "my-dpo-adapter", "-o", f"model={tiny_causal_lm(1)}",
                  "capital?", ok=False)
    one_line_error(refused, "was trained on", f"{PACKAGED_MODEL}@{fp}")
