"""The record schema in core/rows.py: the one table that export, import, training and the
filters read, and the names they show."""

from pathlib import Path

import pytest
from click.testing import CliRunner

import ragloop.core
from ragloop.core import registry, rows
from ragloop.core.cli.app import cli
from ragloop.core.pipeline.prefs_io import validate
from ragloop.core.pipeline.training_data import text_rows

ROWS = {"pairs": {"prompt": "P", "chosen": "good", "rejected": "bad"},
        "kto": {"prompt": "P", "completion": "fine", "label": True},
        "sft": {"prompt": "P", "completion": "fine"}}


def test_the_kinds():
    assert rows.ROW_KINDS == ("pairs", "kto", "sft")
    assert rows.RECORD_KINDS == ("documents", "pairs", "kto", "sft")
    assert rows.ROW_FIELDS == {"pairs": ("prompt", "chosen", "rejected"),
                               "kto": ("prompt", "completion", "label"),
                               "sft": ("prompt", "completion")}


@pytest.mark.parametrize("kind", rows.RECORD_KINDS)
def test_text_and_answer_fields_are_fields_of_the_kind(kind):
    fields = rows.SCHEMA[kind].fields
    assert set(rows.ANSWER_FIELDS[kind]) <= set(rows.TEXT_FIELDS[kind]) <= set(fields)
    assert "label" not in rows.TEXT_FIELDS[kind]        # a bool is not text
    assert "prompt" not in rows.ANSWER_FIELDS[kind]     # mostly retrieved passages


@pytest.mark.parametrize("kind", rows.ROW_KINDS)
def test_a_row_is_told_by_its_fields(kind):
    row = {**ROWS[kind], "question": "q?", "comparison_id": "C1"}
    assert rows.row_kind(row) == rows.record_kind(row) == kind
    assert validate([(1, row)], "line", Path("f.jsonl")) == kind
    assert text_rows([row], kind) == [ROWS[kind]]        # only ROW_FIELDS reach a trainer


def test_a_document_is_no_row():
    doc = {"path": "/d/a.md", "text": "hello", "metadata": {}}
    assert rows.row_kind(doc) is None and rows.record_kind(doc) == "documents"
    assert rows.joined(doc) == "hello"
    assert rows.describe(doc) == "/d/a.md"


def test_joined_and_describe_of_rows():
    pair = {**ROWS["pairs"], "question": "  what   is it? "}
    assert rows.joined(pair) == "P\ngood\nbad"
    assert rows.joined(pair, ["chosen"]) == "good"
    assert rows.describe(pair) == "'what is it?'"
    assert rows.describe({"prompt": "x" * 80}) == repr("x" * 57 + "...")


def test_nouns_in_filter_reports_and_in_training_messages():
    assert [rows.noun(k, 1) for k in rows.RECORD_KINDS] == [
        "1 document", "1 pair", "1 row", "1 row"]
    assert rows.noun("pairs", 2) == "2 pairs" and rows.noun("unknown", 3) == "3 rows"
    assert rows.ROW_NOUNS == {"pairs": "pairs", "kto": "kto rows", "sft": "sft rows"}


def test_the_public_api_hands_out_the_same_objects():
    for name in ("ROW_KINDS", "RECORD_KINDS", "ROW_FIELDS", "TEXT_FIELDS", "ANSWER_FIELDS",
                 "ROW_NOUNS", "row_kind", "record_kind", "joined", "noun", "describe"):
        assert getattr(ragloop.core, name) is getattr(rows, name)


def test_filters_and_commands_take_the_kinds_from_the_schema():
    found = registry.entries("filter")
    assert found["exact-dedup"].cls.applies_to is rows.RECORD_KINDS
    assert found["min-agreement"].cls.applies_to is rows.ROW_KINDS
    runner = CliRunner()
    on = runner.invoke(cli, ["filter", "--help"]).output
    assert "[documents|pairs|kto|sft]" in on
    kind = runner.invoke(cli, ["prefs", "export", "--help"]).output
    assert "[pairs|kto|sft]" in kind
