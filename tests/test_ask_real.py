"""`ragloop ask` on examples/corpus with the real packaged models (MiniLM + SmolLM2)."""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragloop.core.cli import cli

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "corpus"


@pytest.mark.slow
def test_real_default_model_answers_from_the_corpus_and_cites_a_source(ragloop_home,
                                                                      packaged_models):
    packaged_models.give(ragloop_home)         # converted and exported once per session
    runner = CliRunner()
    assert runner.invoke(cli, ["index", str(CORPUS)]).exit_code == 0
    result = runner.invoke(cli, ["ask", "What is the default port of the ferrule server?",
                                 "--max-new-tokens", "40", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["answer"].strip()
    sources = [s["source"] for s in data["sources"]]
    assert any("ferrule/cli/serve.md" in s for s in sources), sources
    # The answer either cites a passage by number, or states the fact the passage holds.
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", data["answer"])}
    assert (cited and cited <= set(range(1, len(sources) + 1))) or "8742" in data["answer"]
    text = runner.invoke(cli, ["ask", "How many vacation days do full-time employees get?",
                               "--max-new-tokens", "30"]).output
    assert re.search(r"\n\nSources:\n\[1\] \S+:\d+-\d+", text)
