"""`ragloop plugins`, discovery through entry points, RAGLOOP_LOAD_PLUGINS, broken plugins.

Third-party plugins are real distributions on sys.path (see `install_fake` in conftest),
found by importlib.metadata exactly as pip-installed ones are.
"""

import json

import pytest
from click.testing import CliRunner

from ragloop.core.cli import cli
from ragloop.core.plugins import DEFAULT_PLUGINS, hook_names, load_plugins, pm
from ragloop.core.registry import get_loader, names

# Third-party plugins, written as a stranger would: against the public API only.
GOOD = '''
from ragloop.core import Filter, FilterResult, hookimpl


class KeepAll(Filter):
    name = "keep-all"

    def apply(self, records):
        return FilterResult(kept=list(records))


@hookimpl
def register_filters(register):
    register(KeepAll)
'''

BROKEN = {
    "import": ('raise RuntimeError("broken on purpose")\n',
               "Warning: plugin 'ragloop-broken' from ragloop-broken failed to import "
               "(RuntimeError: broken on purpose); skipped\n"),
    "signature": ("from ragloop.core import hookimpl\n\n"
                  "@hookimpl\ndef register_filters(register, colour):\n    pass\n",
                  "Warning: plugin 'ragloop-broken' was not loaded (PluginValidationError: "
                  "Plugin 'ragloop-broken' for hook 'register_filters' hookimpl definition: "
                  "register_filters(register, colour) Argument(s) {'colour'} are declared in "
                  "the hookimpl but can not be found in the hookspec); fix or uninstall it\n"),
    "unknown hook": ("from ragloop.core import hookimpl\n\n"
                     "@hookimpl\ndef register_filter(register):\n    pass\n",
                     "Warning: plugin 'ragloop-broken' was not loaded: register_filter is not "
                     "a ragloop hook; see `ragloop plugins --hooks`\n"),
}


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def good(install_fake, monkeypatch):
    # Only the plugins a test installs: whatever else is in the environment stays out.
    monkeypatch.setenv("RAGLOOP_LOAD_PLUGINS", "ragloop-good")
    install_fake("ragloop-good", "ragloop_good", GOOD)


@pytest.fixture
def allow_broken(good, monkeypatch):
    """`good`, with ragloop-broken allowed too (the test installs it)."""
    monkeypatch.setenv("RAGLOOP_LOAD_PLUGINS", "ragloop-good,ragloop-broken")


def test_plugins_without_third_party(fresh_plugins, monkeypatch):
    monkeypatch.setenv("RAGLOOP_LOAD_PLUGINS", "")
    result = run("plugins")
    assert (result.exit_code, result.output) == (
        0, "No plugins installed (built-ins are shown with --all).\n")


def test_plugins_lists_third_party(good):
    result = run("plugins")
    assert (result.exit_code, result.output) == (0, "ragloop-good 0.1\n  hooks: register_filters\n")


def test_plugins_all_includes_builtins(good):
    result = run("plugins", "--all")
    assert result.exit_code == 0
    assert "ragloop.plugins.loaders.text 0.1.0 (built-in)\n  hooks: register_loaders\n" in result.output
    listed = [line.split()[0] for line in result.output.splitlines() if not line.startswith(" ")]
    assert listed == [*sorted(DEFAULT_PLUGINS), "ragloop-good"]


def test_plugins_hook_filter(good):
    output = run("plugins", "--all", "--hook", "register_filters").output
    assert output.endswith("ragloop-good 0.1\n  hooks: register_filters\n")
    assert "ragloop.plugins.filters.dedup 0.1.0 (built-in)" in output
    loaders = run("plugins", "--all", "--hook", "register_loaders").output
    assert "ragloop.plugins.loaders.text" in loaders and "ragloop-good" not in loaders


def test_plugins_json(good):
    result = run("plugins", "--json")
    assert json.loads(result.output) == [
        {"name": "ragloop-good", "version": "0.1", "builtin": False, "hooks": ["register_filters"]}]


def test_plugins_hooks_lists_hook_names():
    assert run("plugins", "--hooks").output.split() == hook_names()
    assert json.loads(run("plugins", "--hooks", "--json").output) == hook_names()


def test_unknown_hook():
    result = run("plugins", "--hook", "register_nope")
    assert result.exit_code == 1
    assert result.output == f"Error: unknown hook 'register_nope'; hooks: {', '.join(hook_names())}\n"


@pytest.mark.parametrize("allowed, shown", [
    (None, True), ("", False), ("ragloop-good", True), ("Ragloop_Good", True),
    ("ragloop-other", False), ("ragloop-other, ragloop-good", True)])
def test_load_plugins_env(install_fake, monkeypatch, allowed, shown):
    install_fake("ragloop-good", "ragloop_good", GOOD)
    if allowed is not None:
        monkeypatch.setenv("RAGLOOP_LOAD_PLUGINS", allowed)
    assert ("keep-all" in names("filter")) is shown
    assert get_loader("text").name == "text", "built-ins load whatever the variable says"


@pytest.mark.parametrize("case", BROKEN)
def test_broken_plugin_warns_and_is_skipped(allow_broken, install_fake, case):
    source, warning = BROKEN[case]
    install_fake("ragloop-broken", "ragloop_broken", source)
    result = run("plugins", "--all")
    assert result.exit_code == 0
    assert result.stderr == warning
    assert "ragloop-broken" not in result.stdout
    assert "ragloop-good 0.1" in result.stdout and "ragloop.plugins.loaders.text" in result.stdout
    assert names("filter")[-1] == "keep-all"
    assert get_loader("text").name == "text"
    pm.check_pending()


def test_plugin_raising_while_registering(allow_broken, install_fake, capsys):
    install_fake("ragloop-broken", "ragloop_broken", (
        "from ragloop.core import hookimpl\n\n"
        "@hookimpl\ndef register_loaders(register):\n    raise RuntimeError('boom')\n"))
    assert get_loader("text").name == "text"
    assert capsys.readouterr().err == (
        "Warning: plugin 'ragloop-broken' failed in register_loaders (RuntimeError: boom); skipped\n")
    # Its other hooks, and other plugins, are unaffected.
    assert "keep-all" in names("filter")


def test_load_plugins_is_idempotent_and_check_pending_passes(good):
    load_plugins()
    registered = pm.list_name_plugin()
    load_plugins()
    assert pm.list_name_plugin() == registered
    assert {name for name, _ in registered} >= {*DEFAULT_PLUGINS, "ragloop-good"}
    pm.check_pending()


HIDDEN = ("{n} installed plugin{s} hidden by RAGLOOP_LOAD_PLUGINS: {names}; add {it} to the "
          "list, or unset the variable to load every installed plugin.\n")


def test_plugins_says_what_the_allowlist_hides_instead_of_none_installed(install_fake,
                                                                         monkeypatch):
    install_fake("ragloop-good", "ragloop_good", GOOD)
    install_fake("ragloop-other", "ragloop_other", GOOD.replace("keep-all", "keep-other"))
    monkeypatch.setenv("RAGLOOP_LOAD_PLUGINS", "")
    result = run("plugins")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == "No plugins loaded (built-ins are shown with --all).\n" + HIDDEN.format(
        n=2, s="s are", names="ragloop-good, ragloop-other", it="them")


def test_plugins_counts_hidden_ones_beside_the_loaded_ones(good, install_fake):
    install_fake("ragloop-other", "ragloop_other", GOOD.replace("keep-all", "keep-other"))
    result = run("plugins")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == "ragloop-good 0.1\n  hooks: register_filters\n" + HIDDEN.format(
        n=1, s=" is", names="ragloop-other", it="it")
    as_json = run("plugins", "--json")        # stdout stays the list; the note goes to stderr
    assert [p["name"] for p in json.loads(as_json.stdout)] == ["ragloop-good"]
    assert as_json.stderr == HIDDEN.format(n=1, s=" is", names="ragloop-other", it="it")


@pytest.mark.parametrize("allowed, warning", [
    ("ragloop-good, ragloop-goood", "RAGLOOP_LOAD_PLUGINS names ragloop-goood, which is not "
     "installed (installed: ragloop-good); fix the name, or install it with `ragloop install "
     "ragloop-goood`"),
    ("ragloop-nope,ragloop-good,ragloop-gone", "RAGLOOP_LOAD_PLUGINS names ragloop-nope, "
     "ragloop-gone, which are not installed (installed: ragloop-good); fix the names, or "
     "install them with `ragloop install NAME`"),
])
def test_plugins_flags_allowlist_names_that_match_nothing_installed(install_fake, monkeypatch,
                                                                   allowed, warning):
    install_fake("ragloop-good", "ragloop_good", GOOD)
    monkeypatch.setenv("RAGLOOP_LOAD_PLUGINS", allowed)
    result = run("plugins")
    assert result.exit_code == 0
    assert result.stdout == "ragloop-good 0.1\n  hooks: register_filters\n"
    assert result.stderr == f"Warning: {warning}\n"
