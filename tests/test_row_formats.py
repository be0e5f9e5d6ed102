"""Training-row file formats are plugins (`register_row_formats`): the built-ins, `jsonl` and
`hf`, and a stranger's, which `prefs export --format` offers and which `prefs import` and
`train --data` use for a path it recognizes. Messages that list formats are built from the
registry, so a plugin's format appears in them."""

import json
import os
import re
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_helpers import run

from ragloop.core import RagloopError, RowFormat, atomic_folder, hookimpl, registry
from ragloop.core.pipeline import prefs_io
from ragloop.core.pipeline.training_data import select
from ragloop.core.plugins import load_plugins, pm

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [{"prompt": "P1", "chosen": "good", "rejected": "bad", "question": "Q1?"},
         {"prompt": "P2", "chosen": "fine", "rejected": "poor"}]
CSV = "prompt,chosen,rejected\r\nP1,good,bad\r\nP2,fine,poor\r\n"


def docs_csv_plugin():
    """The CSV format of docs/plugins.md's register_row_formats section, as a module."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    section = re.search(r"^### register_row_formats\(register\)\n(.*?)^### ", text,
                        re.M | re.S).group(1)
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("docs_row_format_csv")
    exec(compile(code, "docs/plugins.md (register_row_formats)", "exec"), module.__dict__)
    return module


class RowsFolder(RowFormat):
    """A folder format of the test's own: the rows as one JSON list in rows.json."""

    name = "rows-folder"
    noun = "a rows folder"
    writes_folder = True

    def recognizes(self, path):
        return path.is_dir() and (path / "rows.json").is_file()

    def write(self, rows, out):
        with atomic_folder(out) as tmp:
            (tmp / "rows.json").write_text(json.dumps(rows))

    def read(self, path):
        return list(enumerate(json.loads((path / "rows.json").read_text()), 1)), "row"


class NoStdout(RowFormat):
    name = "no-stdout"
    noun = "a no-stdout file"

    def recognizes(self, path):
        return False

    def write(self, rows, out):
        out.write_text("written")


class Plugin:
    @hookimpl
    def register_row_formats(self, register):
        register(RowsFolder)
        register(NoStdout)


@contextmanager
def registered(plugin, name):
    load_plugins()      # built-ins first, as in a real run
    pm.register(plugin, name=name)
    try:
        yield
    finally:
        pm.unregister(name=name)


def rated(tmp_path):
    """Two pairs in the test's workspace, imported from JSONL."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    run("prefs", "import", path)


def test_built_ins_come_first_in_registration_order():
    assert registry.names("row format")[:2] == ["jsonl", "hf"]
    assert registry.get_row_format("hf").writes_folder
    assert not registry.get_row_format("jsonl").writes_folder


def test_a_plugin_format_is_offered_by_export_and_used_by_import_and_train(tmp_path):
    rated(tmp_path)
    out, other = tmp_path / "rows.csv", tmp_path / "other-home"
    with registered(docs_csv_plugin(), "ragloop-csv"):
        assert "--format [jsonl|hf|csv]" in run("prefs", "export", "--help").output
        result = run("prefs", "export", "--format", "csv", "--out", out)
        assert re.fullmatch(rf"Exported 2 pairs to {re.escape(str(out))} "
                            rf"\(sha256 \w{{12}}\)\.\n", result.stderr)
        assert out.read_bytes().decode() == CSV
        assert run("prefs", "export", "--format", "csv").stdout_bytes.decode() == CSV

        assert run("--home", other, "prefs", "import", out).output == (
            f"Imported 2 rows (pairs) from {out} (2 new questions, 4 new answers).\n")
        data = select(None, None, out)
        assert (data.kind, data.source, [r["chosen"] for r in data.rows]) == (
            "pairs", str(out), ["good", "fine"])

        bad = tmp_path / "bad.csv"
        bad.write_text("prompt,chosen,rejected\nP1,good,bad\nP2,,poor\n")
        assert run("prefs", "import", bad, ok=False).stderr == (
            f"Error: {bad} row 2: field 'chosen' is empty; nothing imported\n")

    # Gone with its plugin: not offered, and a .csv file is read as JSONL again.
    result = run("prefs", "export", "--format", "csv", ok=False)
    assert result.exit_code == 2 and "'csv' is not one of 'jsonl', 'hf'." in result.output
    assert run("prefs", "import", out, ok=False).stderr == (
        f"Error: {out} line 1: not JSON (Expecting value); nothing imported "
        f"(3 bad lines in all)\n")


def test_a_plugin_folder_format_is_named_in_the_messages(tmp_path):
    rated(tmp_path)
    folder, plain, pipe = tmp_path / "rows", tmp_path / "plain", tmp_path / "pipe"
    plain.mkdir()
    (plain / "notes.txt").write_text("keep")
    os.mkfifo(pipe)
    with registered(Plugin(), "test-formats"):
        assert run("prefs", "export", "--format", "rows-folder", ok=False).stderr == (
            "Error: --format rows-folder writes a folder: give it with --out\n")
        run("prefs", "export", "--format", "rows-folder", "--out", folder)
        assert [r["chosen"] for r in json.loads((folder / "rows.json").read_text())] == [
            "good", "fine"]
        run("prefs", "export", "--format", "rows-folder", "--out", folder)     # its own: replaced
        assert run("prefs", "export", "--format", "rows-folder", "--out", plain,
                   ok=False).stderr == (
            f"Error: {plain} exists and is not a rows folder; choose another --out\n")
        assert run("--home", tmp_path / "other", "prefs", "import", folder).output == (
            f"Imported 2 rows (pairs) from {folder} (2 new questions, 4 new answers).\n")

        assert run("prefs", "import", plain, ok=False).stderr == (
            f"Error: {plain} is a folder but not a datasets folder saved by `ragloop prefs "
            f"export --format hf` or a rows folder saved by `ragloop prefs export --format "
            f"rows-folder`\n")
        assert run("prefs", "import", pipe, ok=False).stderr == (
            f"Error: {pipe} is not a regular file (a FIFO, socket or device?); give a JSONL "
            f"file, a no-stdout file, a folder written by `prefs export --format hf` or a "
            f"folder written by `prefs export --format rows-folder`\n")

        assert run("prefs", "export", "--format", "no-stdout", ok=False).stderr == (
            "Error: --format no-stdout cannot write to stdout; give a file with --out\n")
    assert [p.name for p in plain.iterdir()] == ["notes.txt"]


def test_jsonl_recognizes_its_suffixes_and_reads_any_file_no_format_claims(tmp_path):
    jsonl = registry.get_row_format("jsonl")()
    for name in ("a.jsonl", "a.NDJSON", "a.json", "a.txt"):
        (tmp_path / name).write_text(json.dumps(PAIRS[0]) + "\n\n{oops\n")
    assert [jsonl.recognizes(tmp_path / n) for n in ("a.jsonl", "a.NDJSON", "a.json",
                                                     "a.txt")] == [True, True, True, False]
    assert not jsonl.recognizes(tmp_path)
    rows, word = prefs_io.read_rows(tmp_path / "a.txt")     # no format claims it: JSONL
    assert word == "line" and rows[0] == (1, PAIRS[0])
    assert rows[1][0] == 3 and str(rows[1][1]) == (
        "not JSON (Expecting property name enclosed in double quotes)")
    (tmp_path / "latin.jsonl").write_bytes(b"\xff\xfe{}")
    with pytest.raises(RagloopError, match=r"latin.jsonl is not UTF-8 text; expected JSONL$"):
        prefs_io.read_rows(tmp_path / "latin.jsonl")
    jsonl.write(PAIRS, tmp_path / "out.jsonl")
    assert (tmp_path / "out.jsonl").read_bytes() == jsonl.dumps(PAIRS)
    assert jsonl.read(tmp_path / "out.jsonl") == (list(enumerate(PAIRS, 1)), "line")


def test_hf_recognizes_a_saved_dataset_or_dataset_dict(tmp_path):
    hf = registry.get_row_format("hf")()
    for name, marker in (("one", "dataset_info.json"), ("splits", "dataset_dict.json")):
        (tmp_path / name).mkdir()
        (tmp_path / name / marker).write_text("{}")
        assert hf.recognizes(tmp_path / name)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.json").write_text("{}")
    assert not hf.recognizes(tmp_path / "empty") and not hf.recognizes(tmp_path / "file.json")
