"""Prompt-lookup decoding in the transformers generator (`-o lookup=N`): greedy answers are
the same as one token per step, fewer forwards where the answer copies its passage, and
nothing changes for sampled answers or batches."""

import pytest
from test_generator import MESSAGES, generator

from ragloop.core.config import build_config
from ragloop.core.errors import RagloopError
from ragloop.core.workspace import Workspace
from ragloop.plugins.generators.transformers import TransformersConfig
from ragloop.plugins.hf.gguf import PACKAGED_MODEL

# The passage holds the answer word for word, as RAG passages do.
COPYING = [{"role": "user", "content":
            "Passage [1]: Backups run every night at two o'clock, and each snapshot is kept "
            "for thirty days before it is pruned by the cleanup job.\n\n"
            "Question: Repeat passage [1] word for word."}]


def counted(gen, messages, **options):
    """(answer, the model's forward calls, the record) for one streamed answer."""
    calls = []
    hook = gen.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        text = "".join(gen.generate(messages, **options))
    finally:
        hook.remove()
    return text, len(calls), gen.last_generation


def test_greedy_answers_are_those_of_one_token_per_step():
    plain, lookup = generator(lookup=0), generator(lookup=5)
    for messages in (MESSAGES, COPYING):
        off, _, off_record = counted(plain, messages, max_new_tokens=32)
        on, _, on_record = counted(lookup, messages, max_new_tokens=32)
        assert on == off and on
        assert on_record["new_tokens"] == off_record["new_tokens"]
    assert on_record["lookup"] == 5 and "lookup" not in off_record
    assert plain.generate_many([MESSAGES], max_new_tokens=16) == \
        lookup.generate_many([MESSAGES], max_new_tokens=16)
    assert lookup.last_generations[0]["lookup"] == 5 and "lookup" not in plain.last_generations[0]


def test_sampled_answers_and_batches_do_not_look_up():
    gen = generator(lookup=5)
    sampled = [counted(gen, MESSAGES, max_new_tokens=12, temperature=0.8, seed=3)
               for _ in range(2)]
    assert sampled[0][0] == sampled[1][0]            # the seed still decides the sample
    assert "lookup" not in sampled[0][2] and sampled[0][1] == sampled[0][2]["new_tokens"]
    seen = []
    generate = gen.model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("prompt_lookup_num_tokens"))
        return generate(*args, **kwargs)

    gen.model.generate = spy
    gen.generate_many([MESSAGES, COPYING], max_new_tokens=8)    # two rows: one batch
    gen.generate_many([COPYING], max_new_tokens=8)              # one row: one stream
    assert seen == [None, 5]


def test_a_negative_lookup_is_refused():
    with pytest.raises(RagloopError, match="lookup must be 0 \\(off\\) or positive, got -1"):
        build_config(TransformersConfig, ["lookup=-1"], "transformers")


@pytest.mark.slow
def test_smollm2_copies_its_passage_in_fewer_forwards(packaged_models, tmp_path):
    ws = Workspace(tmp_path / "home")
    packaged_models.give(ws.home)
    plain = generator(PACKAGED_MODEL, workspace=ws, lookup=0)
    off, off_calls, record = counted(plain, COPYING, max_new_tokens=40)
    lookup = generator(PACKAGED_MODEL, workspace=ws)          # on by default
    on, on_calls, _ = counted(lookup, COPYING, max_new_tokens=40)
    assert on == off and "kept for thirty days before it is pruned" in on
    # One forward per token without lookup (the prompt's included); copied runs are
    # checked several tokens to a forward with it.
    assert off_calls == record["new_tokens"]
    assert on_calls < off_calls / 2
