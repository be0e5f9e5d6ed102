"""The transformers generator: tiny random models for the logic, SmolLM2 for the real thing."""

import json
import threading
import time
import warnings

import pytest
from tiny_models import make_tiny_causal_lm, make_tiny_tokenizer, tiny_causal_lm

from ragloop.core import registry
from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.workspace import Workspace
from ragloop.plugins.generators.transformers import TransformersConfig, TransformersGenerator
from ragloop.plugins.hf.gguf import MARKER, PACKAGED_MODEL, converted_checkpoint

QUESTION = "What is the capital of France?"
MESSAGES = [{"role": "system", "content": "Answer from the passages."},
            {"role": "user", "content": f"[1] Paris is the capital of France.\n\n{QUESTION}"}]


def generator(model=None, workspace=None, **options) -> TransformersGenerator:
    config = TransformersConfig(model=str(model or tiny_causal_lm()), **options)
    return TransformersGenerator(config, workspace=workspace)


@pytest.fixture(scope="module")
def tiny():
    return generator()


def reference_greedy(model_dir, messages, max_new_tokens):
    """The same greedy answer from plain transformers, without streaming or threads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def make_adapter(base_dir, out_dir):
    """A LoRA adapter with non-zero weights (PEFT's default init is a no-op)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")
    with warnings.catch_warnings():       # peft calls a deprecated transformers alias
        warnings.simplefilter("ignore", FutureWarning)
        get_peft_model(model, lora).save_pretrained(out_dir)
    return out_dir


# ---- the tiny models themselves ----------------------------------------------------------

def test_tiny_tokenizer_covers_any_text_and_has_a_chat_template(tmp_path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(make_tiny_tokenizer(tmp_path / "tok"))
    text = "Zürich — naïve 日本語 🙂 tab\tend"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == text
    assert {tok.pad_token, tok.eos_token, tok.bos_token} == {"<pad>", "<|im_end|>", "<|im_start|>"}
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                       add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_causal_lm_loads_and_differs_by_seed(tmp_path):
    from transformers import AutoModelForCausalLM
    a = AutoModelForCausalLM.from_pretrained(make_tiny_causal_lm(tmp_path / "a", seed=0))
    b = AutoModelForCausalLM.from_pretrained(make_tiny_causal_lm(tmp_path / "b", seed=1))
    assert a.config.num_hidden_layers == 2 and a.config.max_position_embeddings == 1024
    assert not a.model.embed_tokens.weight.equal(b.model.embed_tokens.weight)
    assert (tmp_path / "a" / "model.safetensors").is_file()


# ---- registration and options ------------------------------------------------------------

def test_registered_as_the_default_generator():
    assert registry.get_generator("transformers") is TransformersGenerator
    assert TransformersConfig().model == PACKAGED_MODEL
    assert TransformersConfig().trust_remote_code is False


def test_options_are_validated():
    with pytest.raises(RagloopError, match="dtype"):
        build_config(TransformersConfig, ["dtype=float8"], "transformers")
    with pytest.raises(RagloopError, match="device"):
        build_config(TransformersConfig, ["device=gpu"], "transformers")
    assert build_config(TransformersConfig, ["adapter=none"]).adapter is None


# ---- rendering, counting, context --------------------------------------------------------

def test_render_is_the_chat_template_with_the_generation_prompt(tiny):
    text = tiny.render(MESSAGES)
    assert QUESTION in text and "Answer from the passages." in text
    assert text.endswith("<|im_start|>assistant\n")


def test_count_tokens_counts_special_tokens_as_one(tiny):
    assert tiny.count_tokens("<|im_start|>") == 1
    long = "the capital of France " * 400
    assert tiny.count_tokens(long) > 1024                 # never truncated to the context


def test_context_length_comes_from_the_model_and_the_option():
    assert generator().context_length == 1024
    assert generator(context_length=64).context_length == 64


def test_prompt_longer_than_the_context_is_a_one_line_error():
    g = generator(context_length=32)
    with pytest.raises(RagloopError) as info:
        list(g.generate(MESSAGES, max_new_tokens=8))
    assert "\n" not in info.value.message and "context is 32" in info.value.message


# ---- generation --------------------------------------------------------------------------

def test_stream_pieces_join_to_the_plain_greedy_answer(tiny):
    pieces = list(tiny.generate(MESSAGES, max_new_tokens=40))
    assert len(pieces) > 1
    assert "".join(pieces) == reference_greedy(tiny_causal_lm(), MESSAGES, 40)


def test_greedy_is_deterministic_and_recorded(tiny):
    first = "".join(tiny.generate(MESSAGES, max_new_tokens=30))
    assert first == "".join(tiny.generate(MESSAGES, max_new_tokens=30))
    info = tiny.last_generation
    assert info["do_sample"] is False and info["temperature"] == 0
    assert info["prompt_tokens"] == tiny.count_tokens(tiny.render(MESSAGES))
    assert info["new_tokens"] == 30 and info["stop"] == "length"
    assert info["seconds"] > 0 and info["tokens_per_second"] > 0


def test_seeded_sampling_is_reproducible_and_the_seed_is_recorded(tiny):
    def sample(seed):
        return "".join(tiny.generate(MESSAGES, max_new_tokens=30, temperature=1.0, seed=seed))
    a = sample(7)
    assert tiny.last_generation["seed"] == 7 and tiny.last_generation["do_sample"] is True
    assert sample(7) == a
    assert sample(8) != a
    unseeded = sample(None)
    recorded = tiny.last_generation["seed"]
    assert isinstance(recorded, int)
    assert sample(recorded) == unseeded                    # the recorded seed re-makes it


def test_stopping_early_stops_the_generation(tiny):
    stream = tiny.generate(MESSAGES, max_new_tokens=900)
    next(stream)
    stream.close()
    assert tiny.last_generation["stop"] == "cancelled"
    assert tiny.last_generation["new_tokens"] < 900


def test_generation_runs_on_the_callers_thread_and_keeps_its_torch_modes(tiny):
    import torch
    threads, model = set(), tiny.model
    forward = model.forward

    def spy(*args, **kwargs):
        threads.add(threading.get_ident())
        assert torch.is_inference_mode_enabled()
        return forward(*args, **kwargs)

    model.forward = spy
    try:
        before = threading.active_count()
        modes = [(torch.is_grad_enabled(), torch.is_inference_mode_enabled())
                 for _ in tiny.generate(MESSAGES, max_new_tokens=12)]
        assert threading.active_count() == before
    finally:
        del model.forward
    assert threads == {threading.get_ident()}
    assert len(modes) > 1 and set(modes) == {(True, False)}


def test_an_error_in_the_generation_thread_reaches_the_caller():
    g = generator()
    g.model.lm_head = None                               # breaks the forward pass
    started = time.perf_counter()
    with pytest.raises(TypeError):
        list(g.generate(MESSAGES, max_new_tokens=5))
    assert time.perf_counter() - started < 10            # raised, not hung
    assert g.last_generation["stop"] == "error"


def test_lora_adapter_changes_the_answer(tmp_path):
    adapter = make_adapter(tiny_causal_lm(), tmp_path / "my-adapter")
    base = "".join(generator().generate(MESSAGES, max_new_tokens=30))
    tuned = generator(adapter=str(adapter))
    answer = "".join(tuned.generate(MESSAGES, max_new_tokens=30))
    assert answer and answer != base
    assert tuned.adapter_id.startswith("my-adapter@")
    assert generator().adapter_id is None


def test_adapter_by_name_from_the_workspace(tmp_path):
    ws = Workspace(tmp_path / "home")
    make_adapter(tiny_causal_lm(), ws.adapters_dir / "named")
    g = generator(workspace=ws, adapter="named")
    assert "".join(g.generate(MESSAGES, max_new_tokens=5))
    assert g.adapter_path == (ws.adapters_dir / "named").resolve()


def test_bad_adapter_is_a_one_line_error(tmp_path):
    with pytest.raises(RagloopError) as info:
        generator(adapter=str(tmp_path / "missing")).render(MESSAGES)
    assert "\n" not in info.value.message and "missing" in info.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(RagloopError, match="not a PEFT adapter"):
        generator(adapter=str(tmp_path / "empty")).render(MESSAGES)


def test_adapter_of_another_model_is_a_one_line_error(tmp_path):
    other = make_tiny_causal_lm(tmp_path / "wider", hidden=64)
    adapter = make_adapter(other, tmp_path / "wider-adapter")
    with pytest.raises(RagloopError) as info:
        generator(adapter=str(adapter)).render(MESSAGES)
    message = info.value.message
    assert "\n" not in message and message.startswith(f"cannot apply adapter {adapter} to ")
    assert message.endswith("was it trained on this model?")


# ---- the Generator contract: checkpoint(), check(), save_merged() ------------------------

def test_contract_defaults_for_a_generator_without_weights(tmp_path):
    from ragloop.core import Generator

    class Remote(Generator):
        name = "remote"

    remote = Remote()
    assert remote.checkpoint() is None and remote.check() is None
    with pytest.raises(RagloopError, match=r"^generator 'remote' cannot merge adapters$"):
        remote.save_merged({"path": str(tmp_path)}, tmp_path)


def test_checkpoint_is_the_folder_and_loads_nothing(tiny):
    fresh = generator()
    assert fresh.checkpoint() == str(tiny_causal_lm().resolve())
    assert fresh._model is None


def test_check_refuses_a_compress_method_that_cannot_load_before_loading():
    generator().check()                     # nothing to check without --compress
    g = generator(compress="prune-magnitude")
    with pytest.raises(RagloopError, match=r"^--compress quantizes as the model loads, and "
                                           r"prune-magnitude is a prune method"):
        g.check()
    assert g._model is None
    generator(compress="torchao-int8", device="cpu").check()


def test_save_merged_writes_a_plain_model_with_the_adapters_logits(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM
    adapter = make_adapter(tiny_causal_lm(), tmp_path / "lora")
    (tmp_path / "merged").mkdir()
    generator().save_merged({"path": str(adapter)}, tmp_path / "merged")
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    assert (tmp_path / "merged" / "tokenizer.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    tuned = generator(adapter=str(adapter))
    ids = torch.tensor([tuned._encode(tuned.render(MESSAGES))])
    with torch.inference_mode():
        torch.testing.assert_close(merged(ids).logits, tuned.model(ids).logits,
                                   atol=1e-5, rtol=1e-4)


# ---- bad models --------------------------------------------------------------------------

def test_missing_model_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(RagloopError) as info:
        generator(tmp_path / "no-model").render(MESSAGES)
    assert "\n" not in info.value.message and "no-model" in info.value.message
    assert "-o model=" in info.value.message


def test_folder_that_is_not_a_model_is_a_one_line_error(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text('{"model_type": "nonsense"}')
    with pytest.raises(RagloopError) as info:
        generator(tmp_path / "junk").context_length
    assert "\n" not in info.value.message and "junk" in info.value.message


def test_hub_id_offline_is_a_one_line_error():
    with pytest.raises(RagloopError) as info:
        generator("nobody-here/no-such-model").render(MESSAGES)
    message = info.value.message
    assert "\n" not in message and message.startswith("cannot load model 'nobody-here/no-such-model'")


def test_failed_conversion_leaves_nothing_behind(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 4096)
    models = tmp_path / "models"
    with pytest.raises(RagloopError) as info:
        converted_checkpoint(bad, models, name="broken")
    assert "\n" not in info.value.message and "broken.gguf" in info.value.message
    assert list(models.iterdir()) == []                   # no target, no temp folder


# ---- the real packaged model -------------------------------------------------------------

@pytest.fixture(scope="session")
def smollm_home(tmp_path_factory):
    """One workspace for the session, so SmolLM2 is converted only once."""
    return Workspace(tmp_path_factory.mktemp("smollm-home"))


@pytest.mark.slow
def test_packaged_smollm2_is_converted_once_and_answers(smollm_home):
    first = generator(PACKAGED_MODEL, workspace=smollm_home)
    assert first.model_id.startswith(f"{PACKAGED_MODEL}@")
    first.render(MESSAGES)                                 # loads (converting if needed)
    folder = smollm_home.models_dir / PACKAGED_MODEL
    marker = folder / MARKER
    assert marker.is_file() and (folder / "model.safetensors").is_file()
    # The folder is the same model as the packaged name, so its adapters work on either.
    assert generator(folder, workspace=smollm_home).model_id == first.model_id
    stamp = marker.stat().st_mtime_ns
    assert not [p for p in smollm_home.models_dir.iterdir() if p.name.startswith(".")]

    second = generator(PACKAGED_MODEL, workspace=smollm_home)
    messages = [{"role": "user", "content":
                 "Passage [1]: The Eiffel Tower is in Paris and was completed in 1889.\n\n"
                 "Question: When was the Eiffel Tower completed? Cite the passage as [1]."}]
    answer = "".join(second.generate(messages, max_new_tokens=40))
    assert marker.stat().st_mtime_ns == stamp             # loaded, not converted again
    assert json.loads(marker.read_text())["gguf_fingerprint"] in second.model_id
    assert second.context_length == 8192
    assert "1889" in answer
    assert second.last_generation["stop"] == "eos"


def test_ctrl_c_inside_generate_reaches_the_caller_and_leaves_torch_as_it_was(tiny):
    import torch
    model, calls = tiny.model, []
    forward = model.forward

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return forward(*args, **kwargs)

    model.forward = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            list(tiny.generate(MESSAGES, max_new_tokens=30))
    finally:
        del model.forward
    assert len(calls) == 3 and tiny.last_generation["stop"] == "error"
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert "".join(tiny.generate(MESSAGES, max_new_tokens=5))
