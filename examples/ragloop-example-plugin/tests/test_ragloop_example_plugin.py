"""Tests for ragloop-example-plugin. Run them with the plugin installed, as ragloop finds
it through its entry point: `pip install -e '.[test]' && pytest`."""

import json

import pytest
from click.testing import CliRunner
from ragloop_example_plugin import DropMarker, DropMarkerConfig

from ragloop.core import cli, registry


@pytest.fixture(autouse=True)
def ragloop_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAGLOOP_LOAD_PLUGINS", raising=False)  # it could hide this plugin


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.jsonl"
    rows = [{"text": "Install with pip."}, {"text": "TODO: write this"},
            {"text": "todo later"}, {"text": "Run ragloop ask."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_filter_is_registered():
    assert registry.get_filter("drop-marker") is DropMarker


def test_filter_drops_marked_records():
    result = DropMarker().apply([{"text": "a TODO"}, {"text": "fine"}, {"other": "TODO"}])
    assert result.kept == [{"text": "fine"}, {"other": "TODO"}]
    assert result.removed == [({"text": "a TODO"}, "text contains 'TODO'")]


def test_filter_ignore_case():
    result = DropMarker(DropMarkerConfig(ignore_case=True)).apply([{"text": "todo"}])
    assert result.kept == []


def test_empty_marker_is_refused():
    with pytest.raises(ValueError, match="marker must not be empty"):
        DropMarkerConfig(marker="")


def test_command(notes, tmp_path):
    out = tmp_path / "kept.jsonl"
    result = CliRunner().invoke(cli.cli, ["example-filter", str(notes), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == "Kept 3 of 4 records.\nRemoved 1: text contains 'TODO'\n"
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == [
        "Install with pip.", "todo later", "Run ragloop ask."]


def test_command_options(notes):
    result = CliRunner().invoke(cli.cli, ["example-filter", str(notes), "-o", "marker=todo",
                                          "-o", "ignore_case=yes"])
    assert result.output == "Kept 2 of 4 records.\nRemoved 2: text contains 'todo'\n"


def test_command_bad_input(notes, tmp_path):
    result = CliRunner().invoke(cli.cli, ["example-filter", str(notes), "-o", "colour=red"])
    assert result.exit_code == 1
    assert result.output == ("Error: unknown option 'colour' for filter 'drop-marker'; "
                             "valid options: marker, key, ignore_case\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    result = CliRunner().invoke(cli.cli, ["example-filter", str(bad)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {bad}, line 2: not valid JSON "
                             "(Expecting property name enclosed in double quotes)\n")
