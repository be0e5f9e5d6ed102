"""`ragloop eval` end to end with a tiny random model, a tiny LoRA adapter saved the way
`ragloop train` registers one, imported pairs and hand-made passage judgments; and bad input."""

import json
import re
from pathlib import Path

import pytest
from cli_helpers import run
from tiny_models import tiny_causal_lm, tiny_embedder

from ragloop.core.ids import new_id
from ragloop.core.pipeline.adapters import save_adapter
from ragloop.core.pipeline.prefs import build_rows
from ragloop.core.workspace import Workspace, utcnow
from ragloop.plugins.generators.transformers import model_identity

PASSAGE = ("The zebrafish tool reads its settings from zebra.toml in the project folder. "
           "Set max_widgets to limit how many widgets each flurble may hold. ")
QUESTIONS = [f"Where does zebrafish keep setting number {i}?" for i in range(6)]
TRAINED = 3                      # the adapter trained on the pairs of the first 3 questions



def gen():
    return ["-o", f"model={tiny_causal_lm()}", "--max-new-tokens", "6", "-k", "2"]


def one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def no_report(home: Path):
    runs = home / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if "eval-" in p.name]


def render(question: str) -> str:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_causal_lm())
    return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)


def make_adapter(home, name="a", comparison_ids=(), base_model_id=None, random_b=True):
    """A LoRA adapter on the tiny model, registered with the record `ragloop train` writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm(), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                             init_lora_weights=not random_b))
    lineage = {"source": "workspace", "kind": "pairs", "rows": len(comparison_ids),
               "train_rows": len(comparison_ids), "eval_rows": 0,
               "comparison_ids": list(comparison_ids), "candidate_ids": [],
               "dataset_hash": "0" * 64} if comparison_ids else {}
    meta = {"kind": "lora", "method": "dpo", "base_model": str(tiny_causal_lm()),
            "base_model_id": base_model_id or model_identity(tiny_causal_lm()),
            "run_id": "RUN1", "dataset_hash": lineage.get("dataset_hash"), "lineage": lineage,
            "options": {"beta": 0.1, "max_length": 256}}
    save_adapter(Workspace(home), name, lambda tmp: model.save_pretrained(tmp), meta)


@pytest.fixture
def indexed(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\n" + PASSAGE + f"Part {i} only. ")
    run("index", docs, "-o", f"embedder.model={tiny_embedder()}")
    return docs


@pytest.fixture
def rated(indexed, tmp_path, ragloop_home):
    """Six imported pairs; adapter `a` trained on the first three."""
    rows = [{"prompt": render(q), "question": q, "chosen": f"In zebra.toml [{i}].",
             "rejected": f"the moon is blue {i}"} for i, q in enumerate(QUESTIONS)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run("prefs", "import", data)
    pairs = build_rows(Workspace(ragloop_home), "pairs")
    make_adapter(ragloop_home, comparison_ids=[p["comparison_id"] for p in pairs[:TRAINED]])
    return pairs


def judge_passages(home, question: str, relevant_doc: str, rater="human"):
    """Judge every chunk: relevant when it comes from `relevant_doc`."""
    db = Workspace(home).db
    qid = db.execute("select id from questions where text = ?", [question]).fetchone()[0]
    for chunk_id, text, path in db.execute(
            "select c.id, c.text, d.path from chunks c join documents d on d.id = c.document_id"):
        db["passage_judgments"].insert({
            "id": new_id(), "question_id": qid, "chunk_id": chunk_id, "chunk_text": text,
            "relevant": int(path.endswith(relevant_doc)), "rater": rater, "rater_id": "ann",
            "created_at": utcnow()})
    db.conn.commit()


def report_folder(output: str) -> Path:
    return Path(re.search(r"^Report: (.*)report\.md$", output, re.M).group(1))


def test_eval_writes_report_png_and_metrics_and_stores_auditable_comparisons(rated, ragloop_home):
    judge_passages(ragloop_home, QUESTIONS[4], "doc1.md")
    result = run("eval", "--adapter", "a", *gen(), "-n", "2")
    lines = result.stdout.splitlines()
    assert re.match(r"retrieval: recall@2 [\d.]+  mrr@10 [\d.]+  ndcg@10 [\d.]+  \(1 questions\)",
                    lines[0]), lines
    assert re.match(r"reward: accuracy [\d.]+  mean margin [-+][\d.]+  \(2 pairs, beta 0.1\)",
                    lines[1]), lines
    assert re.match(r"winrate: win rate [\d.]+ \[[\d.]+, [\d.]+\]  win \d tie \d both-bad \d "
                    r"loss \d  \(\d questions\)", lines[2]), lines
    folder = report_folder(result.stdout)
    assert folder.parent == ragloop_home / "runs" and folder.name.startswith("eval-")
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "report.md", "report.png"]
    assert (folder / "report.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((folder / "metrics.json").read_text())
    assert record["id"] == folder.name and record["adapter"]["name"] == "a"
    assert len(record["adapter"]["lineage"]["comparison_ids"]) == TRAINED
    reward = record["evaluators"]["reward"]
    # Held out: the pairs of questions 3-5, of which -n 2 keeps the first two.
    assert [d["question"] for d in reward["details"]] == QUESTIONS[TRAINED:TRAINED + 2]
    assert reward["options"] == {"beta": 0.0, "held_out": "question", "batch_size": 4,
                                 "max_length": 0}
    retrieval = record["evaluators"]["retrieval"]["metrics"]
    assert 0 <= retrieval["recall@2"] <= 1 and retrieval["questions"] == 1
    winrate = record["evaluators"]["winrate"]
    assert [d["question"] for d in winrate["details"]] == QUESTIONS[TRAINED:TRAINED + 2]
    assert not any(d["reused"] for d in winrate["details"])
    report = (folder / "report.md").read_text()
    for part in ("## retrieval", "| recall@2 |", "## reward", "| accuracy |", "## winrate",
                 "| win_rate |", "![metrics](report.png)", "## Settings", "## Adapter lineage",
                 "comparisons trained on: 3"):
        assert part in report, part

    db = Workspace(ragloop_home).db
    stored = list(db.query("select c.*, ca.adapter as a_adapter, cb.adapter as b_adapter "
                           "from comparisons c join candidates ca on ca.id = c.candidate_a "
                           "join candidates cb on cb.id = c.candidate_b where c.session = ?",
                           [folder.name]))
    assert len(stored) == 2
    for row in stored:
        assert (row["rater"], row["rater_id"]) == ("judge", "judge@3")
        assert row["a_adapter"] is None and row["b_adapter"].startswith("a@")
        assert row["left_candidate"] in (row["candidate_a"], row["candidate_b"])

    # Again, as the workspace default: the same answers are not generated or judged again.
    run("adapters", "use", "a", "-o", f"model={tiny_causal_lm()}")
    again = run("eval", *gen(), "-n", "2", "--evaluators", "winrate", "--json")
    data = json.loads(again.stdout)
    assert data["adapter"]["name"] == "a" and list(data["evaluators"]) == ["winrate"]
    assert all(d["reused"] for d in data["evaluators"]["winrate"]["details"])
    assert data["evaluators"]["winrate"]["metrics"] == winrate["metrics"]
    assert db["comparisons"].count == len(rated) + 2


def test_questions_file_drops_trained_questions_and_options_reach_evaluators(rated, tmp_path,
                                                                              ragloop_home):
    qfile = tmp_path / "q.txt"
    qfile.write_text(f"{QUESTIONS[0]}\nA brand new question about zebra.toml?\n")
    out = tmp_path / "report"
    result = run("eval", "--adapter", "a", *gen(), "--questions", qfile, "--out", out,
                 "--evaluators", "winrate,reward", "-o", "reward.beta=0.5",
                 "-o", "reward.held_out=comparison", "-o", "winrate.confidence=0.9")
    assert "1 of 2 questions from" in result.stderr and "were trained on" in result.stderr
    record = json.loads((out / "metrics.json").read_text())
    assert [d["question"] for d in record["evaluators"]["winrate"]["details"]] == \
        ["A brand new question about zebra.toml?"]
    assert record["evaluators"]["winrate"]["options"]["confidence"] == 0.9
    reward = record["evaluators"]["reward"]["metrics"]
    assert reward["beta"] == 0.5 and reward["pairs"] == len(rated) - TRAINED


def test_a_neutral_adapter_has_zero_reward_accuracy(indexed, tmp_path, ragloop_home):
    rows = [{"prompt": render(q), "question": q, "chosen": "zebra.toml", "rejected": "moon"}
            for q in QUESTIONS[:3]]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run("prefs", "import", tmp_path / "p.jsonl")
    make_adapter(ragloop_home, "zero", random_b=False)      # lora_B = 0: adapter == base
    result = run("eval", "--adapter", "zero", *gen(), "--evaluators", "reward", "--json")
    data = json.loads(result.stdout)
    metrics = data["evaluators"]["reward"]["metrics"]
    assert metrics["accuracy"] == 0.0 and metrics["mean_margin"] == pytest.approx(0, abs=1e-6)
    assert "records no training lineage" in data["evaluators"]["reward"]["notes"][0]


def test_skips_are_reported_not_failures(rated, ragloop_home):
    make_adapter(ragloop_home, "all", comparison_ids=[p["comparison_id"] for p in rated])
    result = run("eval", "--adapter", "all", *gen(), "--evaluators", "retrieval,reward,winrate")
    assert result.stdout.splitlines()[:3] == [
        "retrieval: skipped: no passage judgments by rater 'human' yet (rate with --passages)",
        "reward: skipped: no held-out pairs: the adapter trained on every rated question "
        "(rate new questions, or train with --eval-split)",
        "winrate: skipped: no held-out questions in the rated questions: the adapter trained "
        "on every one; give new ones with --questions FILE"]
    folder = report_folder(result.stdout)
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "report.md"]
    assert "Skipped: no held-out pairs" in (folder / "report.md").read_text()


def test_retrieval_alone_needs_no_adapter_and_matches_judgments_by_text(rated, ragloop_home):
    judge_passages(ragloop_home, QUESTIONS[0], "doc2.md")
    db = Workspace(ragloop_home).db
    # As after a re-index: the judged chunk ids no longer exist, their texts still do.
    db.execute("update passage_judgments set chunk_id = chunk_id + 1000")
    db.conn.commit()
    run("adapters", "rm", "a")
    data = json.loads(run("eval", "--evaluators", "retrieval", "--json").stdout)
    assert data["adapter"] is None
    detail = data["evaluators"]["retrieval"]["details"][0]
    assert detail["relevant"] == 1 and detail["mrr"] > 0      # found by its text
    assert data["evaluators"]["retrieval"]["metrics"]["questions"] == 1


# ---- bad input --------------------------------------------------------------------------

def test_no_adapter(indexed, ragloop_home):
    one_line_error(run("eval", *gen(), ok=False), "no adapter to evaluate; train one with "
                   "`ragloop train` or pass --adapter")
    no_report(ragloop_home)


def test_unknown_adapter(rated, ragloop_home):
    one_line_error(run("eval", "--adapter", "nope", *gen(), ok=False),
                   "no adapter named 'nope'; adapters: a")
    no_report(ragloop_home)


def test_no_index(ragloop_home):
    make_adapter(ragloop_home)
    one_line_error(run("eval", "--adapter", "a", *gen(), ok=False), "nothing is indexed yet")
    no_report(ragloop_home)


def test_empty_questions_file(rated, tmp_path, ragloop_home):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    one_line_error(run("eval", "--adapter", "a", *gen(), "--questions", empty, ok=False),
                   "holds no questions")
    one_line_error(run("eval", "--adapter", "a", *gen(), "--questions", tmp_path / "missing",
                       ok=False), "cannot read")
    no_report(ragloop_home)


def test_human_rater_without_a_terminal(rated, ragloop_home):
    one_line_error(run("eval", "--adapter", "a", *gen(), "--rater", "human", ok=False),
                   "the human rater needs an interactive terminal")
    no_report(ragloop_home)


def test_adapter_for_another_base_model(rated, ragloop_home):
    make_adapter(ragloop_home, "other", base_model_id="SomeOther/Model-1B")
    one_line_error(run("eval", "--adapter", "other", *gen(), ok=False),
                   "adapter 'other' was trained on SomeOther/Model-1B, not on")
    no_report(ragloop_home)


def test_unknown_evaluator_and_options(rated, tmp_path, ragloop_home):
    one_line_error(run("eval", "--adapter", "a", *gen(), "--evaluators", "reward,bleu", ok=False),
                   "unknown evaluator 'bleu'; available: retrieval, reward, winrate")
    one_line_error(run("eval", "--adapter", "a", *gen(), "-o", "reward.nope=1", ok=False),
                   "unknown option 'nope' for evaluator reward; valid options: beta, held_out")
    one_line_error(run("eval", "--adapter", "a", *gen(), "-o", "reward.beta=-1", ok=False),
                   "beta must be 0")
    one_line_error(run("eval", "--adapter", "a", *gen(), "--evaluators", "retrieval",
                       "-o", "reward.beta=1", ok=False), "not selected with --evaluators")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    one_line_error(run("eval", "--adapter", "a", *gen(), "--out", busy, ok=False),
                   "already exists and is not an empty folder")
    no_report(ragloop_home)


def test_an_adapter_from_ragloop_train_is_evaluated_on_its_held_out_split(indexed, tmp_path,
                                                                          ragloop_home):
    rows = [{"prompt": render(q), "question": q, "chosen": "In zebra.toml [1].",
             "rejected": f"the moon {i}"} for i, q in enumerate(QUESTIONS[:4])]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run("prefs", "import", tmp_path / "p.jsonl")
    run("train", "--max-steps", "2", "--lr", "1e-3", "--eval-split", "0.5", "--name", "t",
        "-o", "max_length=64", "-o", f"model={tiny_causal_lm()}")
    meta = json.loads((ragloop_home / "adapters" / "t" / "ragloop-adapter.json").read_text())
    data = json.loads(run("eval", "--adapter", "t", *gen(), "--evaluators", "reward,winrate",
                          "--json").stdout)
    db = Workspace(ragloop_home).db
    held_out = {db.execute("select q.text from comparisons c join questions q on "
                           "q.id = c.question_id where c.id = ?", [cid]).fetchone()[0]
                for cid in meta["lineage"]["eval_comparison_ids"]}
    reward = data["evaluators"]["reward"]
    assert {d["question"] for d in reward["details"]} == held_out and len(held_out) == 2
    assert {d["question"] for d in data["evaluators"]["winrate"]["details"]} == held_out
    assert data["adapter"]["run_id"] == meta["run_id"]


def test_the_docs_example_evaluator_runs(rated, monkeypatch, ragloop_home):
    import sys
    import types

    from ragloop.core.plugins import load_plugins, pm
    docs = (Path(__file__).resolve().parent.parent / "docs" / "evaluation.md").read_text()
    code = re.findall(r"```python\n(.*?)```", docs, re.S)[-1]
    module = types.ModuleType("docs_example_evaluator")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "docs/evaluation.md", "exec"), module.__dict__)
    load_plugins()
    pm.register(module, name=module.__name__)
    try:
        data = json.loads(run("eval", "--adapter", "a", *gen(), "-n", "2", "--evaluators",
                              "answer-length", "--json").stdout)
    finally:
        pm.unregister(name=module.__name__)
    assert data["evaluators"]["answer-length"]["metrics"]["mean_words"] >= 0


def test_each_evaluator_is_told_on_stderr_off_a_terminal(indexed, tmp_path, ragloop_home,
                                                         monkeypatch):
    """An evaluator loads its models before its own bars start: off a terminal that
    stretch is told too, not silent."""
    monkeypatch.setenv("RAGLOOP_PROGRESS_SECONDS", "0")
    rows = [{"prompt": render(q), "question": q, "chosen": "zebra.toml", "rejected": "moon"}
            for q in QUESTIONS[:3]]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run("prefs", "import", tmp_path / "p.jsonl")
    make_adapter(ragloop_home, "zero", random_b=False)
    result = run("eval", "--adapter", "zero", *gen(), "--evaluators", "reward")
    told = [line.split(",")[0] for line in result.stderr.splitlines()
            if line.startswith("Evaluating reward: ")]
    assert told == ["Evaluating reward: 0/1 (0%)", "Evaluating reward: 1/1 (100%)"]
    assert result.stdout.startswith("reward: ")


def test_reward_scores_a_half_precision_generator_with_a_float32_copy(ragloop_home):
    """The reward evaluator reloads base + adapter in float32 on the CPU (hf loader) when
    the generator's own model is half precision, and scores like the float32 generator."""
    from types import SimpleNamespace

    import torch
    from peft import PeftModel

    from ragloop.plugins.evaluators.reward import scoring_model
    from ragloop.plugins.generators.transformers import TransformersConfig, TransformersGenerator
    make_adapter(ragloop_home)
    path = str(Workspace(ragloop_home).adapters_dir / "a")

    def context(dtype):
        base, tuned = (TransformersGenerator(TransformersConfig(
            model=str(tiny_causal_lm()), adapter=adapter, dtype=dtype, device="cpu"))
            for adapter in (None, path))
        return SimpleNamespace(generators=lambda: [base, tuned], adapter={"path": path})

    half, _ = scoring_model(context("bfloat16"))
    full, _ = scoring_model(context("float32"))
    assert isinstance(half, PeftModel) and not half.training
    assert {p.dtype for p in half.parameters()} == {torch.float32}
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.inference_mode():
        torch.testing.assert_close(half(input_ids=ids).logits, full(input_ids=ids).logits)
        with half.disable_adapter():
            base = half(input_ids=ids).logits
    assert not torch.allclose(base, full(input_ids=ids).logits, atol=1e-4)


def test_reward_scores_a_generator_on_another_runtime_with_a_float32_copy(ragloop_home):
    """A generator that runs an export (openvino) has no torch model: the evaluator loads
    base + adapter from the checkpoint the export came from."""
    from types import SimpleNamespace

    import torch
    from peft import PeftModel

    from ragloop.plugins.evaluators.reward import scoring_model
    from ragloop.plugins.generators.openvino import OpenvinoConfig, OpenvinoGenerator
    from ragloop.plugins.generators.transformers import TransformersConfig, TransformersGenerator
    make_adapter(ragloop_home)
    ws = Workspace(ragloop_home)
    path = str(ws.adapters_dir / "a")
    exported = [OpenvinoGenerator(OpenvinoConfig(model=str(tiny_causal_lm()), adapter=adapter),
                                  workspace=ws) for adapter in (None, path)]
    model, tokenizer = scoring_model(SimpleNamespace(generators=lambda: exported,
                                                     adapter={"path": path}))
    reference, _ = scoring_model(SimpleNamespace(generators=lambda: [
        TransformersGenerator(TransformersConfig(model=str(tiny_causal_lm()), adapter=a,
                                                 device="cpu")) for a in (None, path)],
        adapter={"path": path}))
    assert isinstance(model, PeftModel) and {p.dtype for p in model.parameters()} == {
        torch.float32}
    assert tokenizer("the capital")["input_ids"] == exported[0].hf.tokenizer(
        "the capital")["input_ids"]
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    assert not any(g.export for g in exported)           # nothing was exported to score
