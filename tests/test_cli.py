"""The `ragloop` group: help texts, unknown commands, --debug, `info`, and bad workspaces."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ragloop.core.cli import cli
from ragloop.core.hookspecs import hookimpl
from ragloop.core.plugins import DEFAULT_PLUGINS, pm
from ragloop.core.workspace import Workspace

RAGLOOP = str(Path(sys.executable).with_name("ragloop"))


def run(*args):
    return CliRunner().invoke(cli, list(args), prog_name="ragloop")


def command_names():
    return cli.list_commands(click.Context(cli))


class OpensWorkspace:
    """A plugin command that opens the database, as every storing command does."""

    @hookimpl
    def register_commands(self, cli):
        @cli.command(name="open-db")
        @click.pass_obj
        def open_db(ws):
            """Open the workspace database."""
            click.echo(f"{len(ws.db.table_names())} tables")


def test_help_lists_every_command_with_a_description():
    result = run("--help")
    assert result.exit_code == 0
    lines = result.output.split("\nCommands:\n", 1)[1].splitlines()
    listed = dict(re.fullmatch(r"  (\S+) +(\S.*)", line).groups() for line in lines)
    assert sorted(listed) == command_names()


@pytest.mark.parametrize("name", command_names())
def test_every_command_has_help(name):
    result = run(name, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: ragloop {name} ")
    first_line = cli.get_command(click.Context(cli), name).help.strip().splitlines()[0]
    assert first_line.split()[0] in result.output


def test_unknown_command():
    result = run("nope")
    assert result.exit_code == 1
    assert result.stderr == f"Error: unknown command 'nope'; available: {', '.join(command_names())}\n"


def test_version():
    assert run("--version").output == "ragloop, version 0.1.0\n"


RAISES = '''
import click
from ragloop.core.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command()
    def boom():
        """Fail the way a bug would."""
        raise RuntimeError("boom")
'''


def test_unexpected_exception_is_one_line_unless_debug(install_fake, tmp_path):
    site = install_fake("ragloop-boom", "ragloop_boom", RAISES)
    env = {**os.environ, "PYTHONPATH": str(site)}
    plain = subprocess.run([RAGLOOP, "boom"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert (plain.returncode, plain.stdout) == (1, "")
    assert plain.stderr == "Error: RuntimeError: boom (run `ragloop --debug ...` for the traceback)\n"
    debug = subprocess.run([RAGLOOP, "--debug", "boom"], env=env, capture_output=True, text=True,
                           cwd=tmp_path)
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):\n")
    assert debug.stderr.endswith("RuntimeError: boom\n")


def test_broken_plugin_in_a_real_process(install_fake, tmp_path):
    site = install_fake("ragloop-broken", "ragloop_broken", "import not_installed_anywhere\n")
    result = subprocess.run([RAGLOOP, "plugins", "--all"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(site)}, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == (
        "Warning: plugin 'ragloop-broken' from ragloop-broken failed to import "
        "(ModuleNotFoundError: No module named 'not_installed_anywhere'); skipped\n")
    assert "ragloop.plugins.loaders.text 0.1.0 (built-in)" in result.stdout


@pytest.fixture
def no_third_party(fresh_plugins, monkeypatch):
    monkeypatch.setenv("RAGLOOP_LOAD_PLUGINS", "")


def test_info_fresh_workspace(no_third_party, ragloop_home):
    result = run("info")
    assert result.exit_code == 0
    assert result.output == (
        f"Workspace: {ragloop_home}\n"
        "  (not created yet: the first command that stores something creates it)\n"
        f"Plugins:   {len(DEFAULT_PLUGINS)} built-in, 0 installed (`ragloop plugins --all`)\n")
    assert not ragloop_home.exists(), "info only looks"


def test_info_created_workspace(no_third_party, ragloop_home):
    ws = Workspace()
    ws.set_setting("greeting", "hello")
    ws.close()
    (ragloop_home / "runs" / "run1.json").write_text("{}")
    result = run("info")
    assert result.exit_code == 0
    output = result.output.replace(str(ragloop_home), "HOME")
    output = re.sub(r"\(\d+\.\d [KMG]B, (\d+) migrations", r"(SIZE, \1 migrations", output)
    table_lines = [line for line in output.splitlines() if line.startswith("  ")]
    assert "  settings: 1 row" in table_lines
    assert all(re.fullmatch(r"  [a-z_]+: \d+ rows?", line) for line in table_lines)
    migrations = Workspace().db.execute("select count(*) from _sqlite_migrations").fetchone()[0]
    assert [line for line in output.splitlines() if not line.startswith("  ")] == [
        "Workspace: HOME",
        f"Database:  HOME/ragloop.db (SIZE, {migrations} migrations applied)",
        "Indexes:   HOME/indexes (0 files, 0 B)",
        "Models:    HOME/models (0 files, 0 B)",
        "Adapters:  HOME/adapters (0 files, 0 B)",
        "Runs:      HOME/runs (1 files, 2 B)",
        f"Plugins:   {len(DEFAULT_PLUGINS)} built-in, 0 installed (`ragloop plugins --all`)",
    ]


def test_info_json(no_third_party, ragloop_home):
    Workspace().db.conn.close()
    report = json.loads(run("info", "--json").output)
    assert report["home"] == str(ragloop_home) and report["exists"] is True
    assert report["tables"]["settings"] == 0
    assert not any(t.startswith(("_", "sqlite_")) for t in report["tables"])
    assert report["folders"]["runs"] == {"path": str(ragloop_home / "runs"), "files": 0, "bytes": 0}
    assert report["plugins"] == {"builtin": len(DEFAULT_PLUGINS), "installed": 0}


@pytest.mark.parametrize("how", ["env", "--home"])
def test_workspace_that_cannot_be_created(tmp_path, monkeypatch, how):
    # Under a regular file: creation fails even as root, where chmod would not stop it.
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    home = blocker / "sub"
    if how == "env":
        monkeypatch.setenv("RAGLOOP_HOME", str(home))
        args = ["open-db"]
    else:
        args = ["--home", str(home), "open-db"]
    pm.register(OpensWorkspace(), name="test-opens-workspace")
    try:
        result = run(*args)
    finally:
        pm.unregister(name="test-opens-workspace")
    assert result.exit_code == 1
    assert result.output == (f"Error: cannot create the workspace at {home} (Not a directory); "
                             "choose another with --home or RAGLOOP_HOME\n")


def test_corrupt_database(ragloop_home):
    ragloop_home.mkdir()
    (ragloop_home / "ragloop.db").write_bytes(b"this is not a database\n" * 200)
    result = run("info")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: the workspace database {ragloop_home / 'ragloop.db'} is unreadable "
        "(file is not a database); move it aside or choose another --home (`ragloop index "
        "--rebuild PATH...` moves it aside and indexes PATH again, keeping the ratings it can "
        "read)\n")


def test_database_from_a_newer_version(ragloop_home):
    ws = Workspace()
    ws.db["_sqlite_migrations"].insert(
        {"migration_set": "ragloop.core", "name": "m999_from_the_future", "applied_at": "x"})
    ws.close()
    result = run("info")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: the workspace database {ragloop_home / 'ragloop.db'} was written by a newer "
        "version of ragloop.core (migration 'm999_from_the_future' is unknown here); "
        "upgrade ragloop\n")


def test_output_into_a_closed_pipe_stops_quietly(tmp_path):
    """`ragloop plugins --all | head -1`: the reader leaves early; no error line about it."""
    read_end, write_end = os.pipe()
    os.close(read_end)          # closed before ragloop writes: every write fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-c", "from ragloop.core.cli import main; main()",
                               "--home", str(tmp_path), "plugins", "--all"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert "Broken pipe" not in done.stderr and "Error" not in done.stderr, done.stderr
    assert done.returncode == 1
