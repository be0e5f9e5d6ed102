"""`-o key=value` options: coerced by the Config dataclass's field types, checked by it."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from ragloop.core.config import build_config, option_help
from ragloop.core.errors import RagloopError


@dataclass
class Options:
    steps: int = field(default=10, metadata={"help": "Training steps."})
    rate: float = field(default=0.5, metadata={"help": "Learning rate."})
    verbose: bool = field(default=False, metadata={"help": "Say more."})
    model: str = field(default="tiny", metadata={"help": "Model name."})
    seed: Optional[int] = field(default=None, metadata={"help": "Random seed."})
    limit: int | None = field(default=None, metadata={"help": "At most this many."})
    mode: Literal["fast", "slow"] = field(default="fast", metadata={"help": "Speed."})
    bits: Literal[4, 8] = field(default=8, metadata={"help": "Quantization bits."})
    layers: list[str] = field(default_factory=list, metadata={"help": "Layer names."})
    sizes: list[int] = field(default_factory=list, metadata={"help": "Sizes."})

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")


def test_defaults():
    assert build_config(Options) == Options()


@pytest.mark.parametrize("pair, attr, value", [
    ("steps=3", "steps", 3),
    ("rate=1e-4", "rate", 1e-4),
    ("verbose=true", "verbose", True), ("verbose=YES", "verbose", True),
    ("verbose=on", "verbose", True), ("verbose=0", "verbose", False),
    ("verbose=off", "verbose", False),
    ("model=a=b", "model", "a=b"),
    ("seed=7", "seed", 7), ("seed=none", "seed", None), ("seed=", "seed", None),
    ("limit=3", "limit", 3), ("limit=null", "limit", None),
    ("mode=slow", "mode", "slow"), ("bits=4", "bits", 4),
    ("layers=q_proj, v_proj", "layers", ["q_proj", "v_proj"]), ("layers=", "layers", []),
    ("sizes=1,2,3", "sizes", [1, 2, 3]),
    (" steps = 4 ", "steps", 4),
])
def test_coercion_by_field_type(pair, attr, value):
    config = build_config(Options, [pair])
    assert getattr(config, attr) == value
    assert type(getattr(config, attr)) is type(value)


def test_overrides_and_pairs_combine():
    config = build_config(Options, ["rate=0.1"], steps=5)
    assert (config.steps, config.rate) == (5, 0.1)


@pytest.mark.parametrize("pair, message", [
    ("steps=many", "option steps: expected int, got 'many'"),
    ("rate=fast", "option rate: expected float, got 'fast'"),
    ("verbose=maybe", "option verbose: expected true or false, got 'maybe'"),
    ("mode=medium", "option mode: 'medium' is not one of fast, slow"),
    ("bits=2", "option bits: '2' is not one of 4, 8"),
    ("sizes=1,x", "option sizes: expected int, got 'x'"),
    ("seed=abc", "option seed: expected int, got 'abc'"),
    ("steps", "option 'steps' is not key=value; write it as -o key=value"),
    ("=3", "option '=3' is not key=value; write it as -o key=value"),
])
def test_bad_values(pair, message):
    with pytest.raises(RagloopError) as info:
        build_config(Options, [pair])
    assert info.value.message == message


def test_unknown_key_lists_valid_ones():
    with pytest.raises(RagloopError) as info:
        build_config(Options, ["colour=red"], owner="method 'dpo'")
    assert info.value.message == (
        "unknown option 'colour' for method 'dpo'; valid options: steps, rate, verbose, model, "
        "seed, limit, mode, bits, layers, sizes")


def test_unknown_key_without_options():
    @dataclass
    class Nothing:
        pass

    with pytest.raises(RagloopError, match=r"^unknown option 'x'; valid options: none \(it takes no options\)$"):
        build_config(Nothing, ["x=1"])


def test_post_init_value_error_becomes_one_line():
    with pytest.raises(RagloopError) as info:
        build_config(Options, ["steps=0"], owner="method 'dpo'")
    assert info.value.message == "invalid options for method 'dpo': steps must be at least 1, got 0"


def test_option_help():
    rows = {name: (type_name, default, help) for name, type_name, default, help in option_help(Options)}
    assert rows["steps"] == ("int", 10, "Training steps.")
    assert rows["layers"] == ("list", [], "Layer names.")
    assert rows["mode"][1:] == ("fast", "Speed.")
