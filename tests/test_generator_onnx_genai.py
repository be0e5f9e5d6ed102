"""The onnx-genai generator on a tiny random Llama: exported once per adapter and precision,
the same greedy answers as the transformers generator in fp32 (close ones in int8), batches
equal to one by one, the export kept and rebuilt when the adapter changes, and one-line
errors. Exports run ONNX Runtime GenAI's real model builder: tests share them where they can.
"""

import json
import subprocess
import sys
import time

import pytest
from cli_helpers import run
from test_generator import make_adapter
from tiny_models import make_tiny_causal_lm, tiny_embedder

from ragloop.core.errors import RagloopError
from ragloop.core.pipeline.ask import load_generator
from ragloop.core.workspace import Workspace
from ragloop.plugins.generators.export_cache import RECORD, read_record
from ragloop.plugins.generators.onnx_genai import OnnxGenaiConfig, OnnxGenaiGenerator
from ragloop.plugins.generators.transformers import TransformersConfig, TransformersGenerator

pytest.importorskip("onnxruntime_genai")

QUESTIONS = ["What is the capital of France?", "How many",
             "Is the dog fast or slow, and what colour is the house by the river?"]


def chat(question):
    return [{"role": "system", "content": "Answer from the passages."},
            {"role": "user", "content": f"[1] Paris is the capital of France.\n\n{question}"}]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A workspace whose exports the tests share, and a tiny Llama the runtime can run
    (its attention kernel needs a head size that is a multiple of 8: 64 wide, 4 heads)."""
    root = tmp_path_factory.mktemp("onnx-genai")
    model = make_tiny_causal_lm(root / "llama64", hidden=64)
    return Workspace(root / "ws"), model


def onnx(shared, **options):
    ws, model = shared
    return OnnxGenaiGenerator(OnnxGenaiConfig(model=str(model), **options), workspace=ws)


def torch_gen(shared, **options):
    return TransformersGenerator(TransformersConfig(model=str(shared[1]), **options))


def answers(gen, max_new_tokens=16):
    return ["".join(gen.generate(chat(q), max_new_tokens=max_new_tokens)) for q in QUESTIONS]


def prefix_share(a: str, b: str) -> float:
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return same / max(len(a), 1)


def check_answers_as_transformers_and_streams(gen, reference, shared, runtime: str,
                                              precision: str) -> dict:
    """`gen` (an exported generator) gives `reference`'s greedy answers, streams, and shows
    the same prompts and model id; returns the streamed answer's record."""
    assert answers(gen) == answers(reference)
    pieces = list(gen.generate(chat(QUESTIONS[2]), max_new_tokens=16))
    assert len(pieces) > 1                                  # streamed, not all at the end
    record = gen.last_generation
    assert record["runtime"].startswith(f"{runtime} ") and record["precision"] == precision
    assert record["new_tokens"] == 16 and record["stop"] == "length"
    # The same prompts and the same model id (adapters trained on it are accepted).
    assert gen.render(chat("x")) == reference.render(chat("x"))
    assert gen.count_tokens("the capital") == reference.count_tokens("the capital")
    assert gen.model_id == reference.model_id and gen.checkpoint() == reference.checkpoint()
    assert gen.export.parent == shared[0].models_dir / "generator-exports"
    return record


def test_fp32_export_answers_exactly_as_transformers_and_streams(shared):
    check_answers_as_transformers_and_streams(onnx(shared, precision="fp32"), torch_gen(shared),
                                              shared, "onnxruntime-genai", "fp32")


def test_batched_answers_equal_one_by_one(shared):
    gen = onnx(shared, precision="fp32", batch_size=2)
    conversations = [chat(q) for q in QUESTIONS] + [chat("What?" + " a" * 30)]
    one_by_one = ["".join(gen.generate(c, max_new_tokens=12)) for c in conversations]
    assert gen.generate_many(conversations, max_new_tokens=12) == one_by_one
    assert sorted(r["batch"] for r in gen.last_generations) == [2, 2, 2, 2]
    sampled = gen.generate_many([chat(QUESTIONS[0])] * 3, max_new_tokens=8, temperature=1.5,
                                seed=5)
    assert sampled == gen.generate_many([chat(QUESTIONS[0])] * 3, max_new_tokens=8,
                                        temperature=1.5, seed=5)
    assert len(set(sampled)) > 1


def test_int8_is_smaller_and_close_and_a_damaged_export_is_made_again(shared):
    gen = onnx(shared, precision="int8")
    got, want = answers(gen), answers(torch_gen(shared))
    # Quantized weights: answers may part from float32's, but not from the start.
    assert sum(prefix_share(w, g) for w, g in zip(want, got)) / len(want) > 0.25
    fp32 = onnx(shared, precision="fp32")
    fp32.context_length  # noqa: B018  (loads: the export the first test made)
    size = {p: sum(f.stat().st_size for f in folder.iterdir())
            for p, folder in (("int8", gen.export), ("fp32", fp32.export))}
    assert size["int8"] < 0.8 * size["fp32"]        # the tiny model is mostly embeddings
    check_stale_record_made_again(gen, got, lambda: onnx(shared, precision="int8"))


def check_stale_record_made_again(gen, got: list[str], reopen) -> None:
    """A record from another version (or a torn one) in `gen`'s int8 export is never used:
    `reopen()` makes the export again, answering `got` as before."""
    (gen.export / RECORD).write_text('{"key": {"recipe": 0}}')
    again = reopen()
    assert answers(again) == got
    assert read_record(again.export)["key"]["precision"] == "int8"


def test_export_is_kept_per_adapter_and_made_again_when_the_adapter_changes(shared, tmp_path):
    adapter = make_adapter(shared[1], tmp_path / "lora")
    first = onnx(shared, precision="fp32", adapter=str(adapter))
    with_adapter = answers(first)
    assert with_adapter == answers(torch_gen(shared, adapter=str(adapter)))
    assert with_adapter != answers(onnx(shared, precision="fp32"))
    # Another generator with the same adapter reuses the export: no export this time.
    started = time.perf_counter()
    second = onnx(shared, precision="fp32", adapter=str(adapter))
    second.context_length  # noqa: B018  (loads)
    assert second.export == first.export and time.perf_counter() - started < 20
    # New weights in the same folder (training again): a new export, with their answers.
    retrained(adapter)
    third = onnx(shared, precision="fp32", adapter=str(adapter))
    assert answers(third) == answers(torch_gen(shared, adapter=str(adapter)))
    assert third.export != first.export and first.export.is_dir()


def retrained(folder):
    """The adapter in `folder` with other weights, as another training run would leave it."""
    from safetensors.torch import load_file, save_file
    path = folder / "adapter_model.safetensors"
    weights = load_file(path)
    save_file({k: v * 1.5 if "lora_B" in k else v for k, v in weights.items()}, path)


def test_a_failed_export_is_one_line_and_falls_back_only_when_asked(tmp_path):
    # Head size 12: the runtime's attention kernel refuses it, so the export fails its check.
    model = make_tiny_causal_lm(tmp_path / "llama48", hidden=48)
    ws = Workspace(tmp_path / "ws")
    gen = OnnxGenaiGenerator(OnnxGenaiConfig(model=str(model)), workspace=ws)
    with pytest.raises(RagloopError) as err:
        gen.context_length  # noqa: B018
    message = str(err.value)
    assert "failed (" in message and "head_size" in message and "\n" not in message
    assert "-o fallback=true" in message
    # The failure is recorded: the next load says so at once instead of exporting again.
    started = time.perf_counter()
    with pytest.raises(RagloopError, match="failed"):
        OnnxGenaiGenerator(OnnxGenaiConfig(model=str(model)), workspace=ws).context_length
    assert time.perf_counter() - started < 20
    kept = OnnxGenaiGenerator(OnnxGenaiConfig(model=str(model), fallback=True), workspace=ws)
    reference = TransformersGenerator(TransformersConfig(model=str(model)))
    got = "".join(kept.generate(chat(QUESTIONS[0]), max_new_tokens=8))
    assert got == "".join(reference.generate(chat(QUESTIONS[0]), max_new_tokens=8))
    assert "head_size" in kept.last_generation["fallback"]


BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == sys.argv[3]:
            raise ImportError(name)
sys.meta_path.insert(0, Block())
from ragloop.core import RagloopError
from ragloop.core.pipeline.ask import load_generator
from ragloop.core.workspace import Workspace
chat = [{'role': 'user', 'content': 'What is the capital?'}]
try:
    load_generator(Workspace(sys.argv[1]), sys.argv[4], ['model=' + sys.argv[2]]).check()
except RagloopError as exc:
    print(exc)
gen = load_generator(Workspace(sys.argv[1]), sys.argv[4], ['model=' + sys.argv[2],
                                                          'fallback=true'])
print(repr(''.join(gen.generate(chat, max_new_tokens=6))))
print(gen.last_generation['fallback'])
"""


def check_missing_runtime(name: str, module: str, dist: str, extra: str, model,
                          tmp_path) -> None:
    """Generator `name` with its runtime's `module` made unimportable: a one-line error
    naming the extra, and with fallback=true the transformers generator's answer, saying
    why."""
    out = subprocess.run([sys.executable, "-c", BLOCKED, str(tmp_path / "ws"), str(model),
                          module, name], capture_output=True, text=True)
    lines = out.stdout.splitlines()
    message = (f"the {name} generator needs the Python package {dist!r}, which is not "
               f"installed; install it with `pip install 'ragloop[{extra}]'`, or use "
               f"--generator transformers")
    assert lines[0] == message, out.stderr
    reference = TransformersGenerator(TransformersConfig(model=str(model)))
    want = "".join(reference.generate([{"role": "user", "content": "What is the capital?"}],
                                      max_new_tokens=6))
    assert lines[1] == repr(want) and lines[2] == message
    assert "answering with the transformers generator (fallback=true)" in out.stderr


def test_a_missing_runtime_names_the_extra(shared, tmp_path):
    check_missing_runtime("onnx-genai", "onnxruntime_genai", "onnxruntime-genai", "onnx-genai",
                          shared[1], tmp_path)


def check_adapter_of_another_base_refused(name: str, shared, tmp_path) -> None:
    other = make_tiny_causal_lm(tmp_path / "other", seed=3, hidden=64)
    adapter = make_adapter(other, tmp_path / "lora")
    (adapter / "ragloop-adapter.json").write_text(json.dumps(
        {"name": "lora", "kind": "lora", "base_model_id": "llama@000000000000"}))
    with pytest.raises(RagloopError, match="was trained on llama@000000000000, not on llama@"):
        load_generator(shared[0], name, [f"model={shared[1]}"], adapter=str(adapter))


def test_an_adapter_of_another_base_is_refused(shared, tmp_path):
    check_adapter_of_another_base_refused("onnx-genai", shared, tmp_path)


def ask_params(name: str, shared, tmp_path, *options: str) -> dict:
    """`ragloop ask --generator NAME` in the shared workspace: the parameters it logged."""
    ws, model = shared
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Capital\n\nParis is the capital of France.\n")
    home = ["--home", str(ws.home)]
    run(*home, "index", docs, "-o", f"embedder.model={tiny_embedder()}")
    extra = [arg for option in options for arg in ("-o", option)]
    out = run(*home, "ask", "What is the capital?", "--generator", name, "-o",
              f"model={model}", *extra, "--max-new-tokens", "6").stdout
    assert "Sources:" in out
    row = list(ws.db.query("select * from asks order by created_at desc limit 1"))[0]
    assert row["generator"] == name
    return json.loads(row["params_json"])


def test_ask_with_the_generator_logs_runtime_and_precision(shared, tmp_path):
    params = ask_params("onnx-genai", shared, tmp_path, "precision=fp32")
    assert params["precision"] == "fp32" and params["runtime"].startswith("onnxruntime-genai")
