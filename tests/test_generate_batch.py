"""Generator.generate_many: the default (one after another) and the batched overrides."""

import random

from ragloop.core import Generator


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
