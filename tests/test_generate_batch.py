"""Generator.generate_many: the default (one after another) and the batched overrides."""

import random

import pytest

from ragloop.core import Generator, RagloopError


class DiceGenerator(Generator):
    """Answers with words drawn from its seed, so the seeding rule is visible."""

    name = "dice"

    def generate(self, messages, *, max_new_tokens=256, temperature=0.0, seed=None):
        rng = random.Random(seed)
        for _ in range(max_new_tokens):
            yield f"{messages[-1]['content']}{rng.randint(0, 999)} "


def conversations(n):
    return [[{"role": "user", "content": f"q{i}"}] for i in range(n)]


def test_default_generate_many_runs_generate_once_per_conversation_in_order():
    gen = DiceGenerator(DiceGenerator.Config())
    many = gen.generate_many(conversations(3), max_new_tokens=4, temperature=1.0, seed=7)
    one_by_one = ["".join(gen.generate(c, max_new_tokens=4, temperature=1.0, seed=7 + i))
                  for i, c in enumerate(conversations(3))]
    assert many == one_by_one
    assert [answer.split()[0][:2] for answer in many] == ["q0", "q1", "q2"]
    # Conversation i gets seed + i: the same conversation twice still gives two samples.
    twice = gen.generate_many(conversations(1) * 2, max_new_tokens=4, temperature=1.0, seed=7)
    assert twice[0] != twice[1]
    assert gen.generate_many([], max_new_tokens=4) == []


# ---- the transformers generator: one batch, left-padded -----------------------------------

QUESTIONS = ["What is the capital of France?", "Which river runs through the city?",
             "How many", "Is the dog fast or slow, and what colour is the house by the river?"]


def rag(question, passage="Paris is the capital of France."):
    return [{"role": "system", "content": "Answer from the passages."},
            {"role": "user", "content": f"[1] {passage}\n\n{question}"}]


@pytest.fixture(scope="module")
def tiny_generator():
    from tiny_models import tiny_causal_lm
    from ragloop.plugins.generators.transformers import TransformersConfig, TransformersGenerator
    return TransformersGenerator(TransformersConfig(model=str(tiny_causal_lm()), batch_size=3))


def test_transformers_batched_greedy_answers_equal_one_by_one(tiny_generator):
    # Prompts of different lengths, so the batch is padded; batch_size 3 makes two batches.
    conversations = [rag(q) for q in QUESTIONS] + [rag("What?", "a " * 40)]
    one_by_one = ["".join(tiny_generator.generate(c, max_new_tokens=12)) for c in conversations]
    many = tiny_generator.generate_many(conversations, max_new_tokens=12)
    assert many == one_by_one
    assert len(set(many)) > 1                 # the answers differ: order is checked too
    records = tiny_generator.last_generations
    assert [r["prompt_tokens"] for r in records] == [
        tiny_generator.count_tokens(tiny_generator.render(c)) for c in conversations]
    assert sorted(r["batch"] for r in records) == [2, 2, 3, 3, 3]
    assert all(r["new_tokens"] <= 12 and r["stop"] in ("eos", "length") for r in records)


def test_transformers_batched_sampling_is_reproducible_from_its_seed(tiny_generator):
    conversations = [rag(QUESTIONS[0])] * 3
    first = tiny_generator.generate_many(conversations, max_new_tokens=8, temperature=1.5,
                                         seed=11)
    again = tiny_generator.generate_many(conversations, max_new_tokens=8, temperature=1.5,
                                         seed=11)
    assert first == again
    assert len(set(first)) > 1                # one seed, but each answer its own sample
    assert {r["seed"] for r in tiny_generator.last_generations} == {11}


def test_transformers_generate_many_refuses_bad_requests(tiny_generator):
    with pytest.raises(RagloopError, match="max_new_tokens must be at least 1"):
        tiny_generator.generate_many([rag("x")], max_new_tokens=0)
    with pytest.raises(RagloopError, match="context"):
        tiny_generator.generate_many([rag("x"), rag("word " * 2000)], max_new_tokens=4)
    assert tiny_generator.generate_many([], max_new_tokens=4) == []


def test_one_prompt_for_every_row_is_read_once_and_answers_as_one_by_one(tiny_generator):
    conversation = rag(QUESTIONS[3])
    prompt = tiny_generator.count_tokens(tiny_generator.render(conversation))
    greedy = "".join(tiny_generator.generate(conversation, max_new_tokens=10))
    seen = []
    embed = tiny_generator.model.get_input_embeddings()
    hook = embed.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    try:
        many = tiny_generator.generate_many([conversation] * 3, max_new_tokens=10)
    finally:
        hook.remove()
    assert many == [greedy] * 3
    # The prompt once, for one row; then every step only the newest token of the 3 rows.
    assert seen[0] == (1, prompt - 1)
    assert set(seen[1:]) == {(3, 1)}
    sampled = tiny_generator.generate_many([conversation] * 3, max_new_tokens=8,
                                           temperature=1.5, seed=5)
    assert len(set(sampled)) > 1
