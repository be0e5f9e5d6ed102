"""One test per hook (test_docs.py checks that none is missing): a one-off plugin implements
the hook and the registry, or the CLI, sees what it registered, and stops seeing it after."""

from contextlib import contextmanager

import click
import pytest
from click.testing import CliRunner

from ragloop.core import components as kinds
from ragloop.core import registry
from ragloop.core.cli import cli
from ragloop.core.errors import RagloopError
from ragloop.core.hookspecs import hookimpl
from ragloop.core.plugins import load_plugins, pm


@contextmanager
def registered(plugin, name="test-plugin"):
    load_plugins()  # built-ins first, as in a real run, so they win name clashes
    pm.register(plugin, name=name)
    try:
        yield
    finally:
        pm.unregister(name=name)


def assert_registers(kind, cls, plugin):
    getter = getattr(registry, "get_" + kind.replace(" ", "_"))
    with registered(plugin):
        assert getter(cls.name) is cls
        assert registry.entries(kind)[cls.name].plugin == "test-plugin"
    assert cls.name not in registry.names(kind)


def test_hook_register_commands():
    class Plugin:
        @hookimpl
        def register_commands(self, cli):
            @cli.command()
            @click.argument("name")
            def greet(name):
                """Greet someone by name."""
                click.echo(f"Hello, {name}!")

    runner = CliRunner()
    with registered(Plugin()):
        assert runner.invoke(cli, ["greet", "Ada"]).output == "Hello, Ada!\n"
        assert "  greet " in runner.invoke(cli, ["--help"]).output
    assert runner.invoke(cli, ["greet", "Ada"]).exit_code == 1


def test_hook_register_loaders():
    class Csv(kinds.Loader):
        name = "test-csv"
        extensions = (".csv",)

    class Plugin:
        @hookimpl
        def register_loaders(self, register):
            register(Csv)

    assert_registers("loader", Csv, Plugin())


def test_hook_register_chunkers():
    class Lines(kinds.Chunker):
        name = "test-lines"

    class Plugin:
        @hookimpl
        def register_chunkers(self, register):
            register(Lines)

    assert_registers("chunker", Lines, Plugin())


def test_hook_register_embedders():
    class Hashing(kinds.Embedder):
        name = "test-hashing"

    class Plugin:
        @hookimpl
        def register_embedders(self, register):
            register(Hashing)

    assert_registers("embedder", Hashing, Plugin())


def test_hook_register_stores():
    class Flat(kinds.Store):
        name = "test-flat"

    class Plugin:
        @hookimpl
        def register_stores(self, register):
            register(Flat)

    assert_registers("store", Flat, Plugin())


def test_hook_register_rerankers():
    class Reverse(kinds.Reranker):
        name = "test-reverse"

    class Plugin:
        @hookimpl
        def register_rerankers(self, register):
            register(Reverse)

    assert_registers("reranker", Reverse, Plugin())


def test_hook_register_generators():
    class Parrot(kinds.Generator):
        name = "test-parrot"

    class Plugin:
        @hookimpl
        def register_generators(self, register):
            register(Parrot)

    assert_registers("generator", Parrot, Plugin())


def test_hook_register_raters():
    class Longer(kinds.Rater):
        name = "test-longer"

    class Plugin:
        @hookimpl
        def register_raters(self, register):
            register(Longer)

    assert_registers("rater", Longer, Plugin())


def test_hook_register_filters():
    class KeepAll(kinds.Filter):
        name = "test-keep-all"

    class Plugin:
        @hookimpl
        def register_filters(self, register):
            register(KeepAll)

    assert_registers("filter", KeepAll, Plugin())


def test_hook_register_row_formats():
    class Lines(kinds.RowFormat):
        name = "test-lines"

    class Plugin:
        @hookimpl
        def register_row_formats(self, register):
            register(Lines)

    assert_registers("row format", Lines, Plugin())


def test_hook_register_training_methods():
    class Nothing(kinds.TrainingMethod):
        name = "test-nothing"

    class Plugin:
        @hookimpl
        def register_training_methods(self, register):
            register(Nothing)

    assert_registers("training method", Nothing, Plugin())


def test_hook_register_training_backends():
    class Inline(kinds.TrainingBackend):
        name = "test-inline"

    class Plugin:
        @hookimpl
        def register_training_backends(self, register):
            register(Inline)

    assert_registers("training backend", Inline, Plugin())


def test_hook_register_compressors():
    class Same(kinds.Compressor):
        name = "test-same"

    class Plugin:
        @hookimpl
        def register_compressors(self, register):
            register(Same)

    assert_registers("compressor", Same, Plugin())


def test_hook_register_distillers():
    class Copy(kinds.Distiller):
        name = "test-copy"

    class Plugin:
        @hookimpl
        def register_distillers(self, register):
            register(Copy)

    assert_registers("distiller", Copy, Plugin())


def test_hook_register_evaluators():
    class Zero(kinds.Evaluator):
        name = "test-zero"

    class Plugin:
        @hookimpl
        def register_evaluators(self, register):
            register(Zero)

    assert_registers("evaluator", Zero, Plugin())


@pytest.mark.parametrize("kind", registry.HOOKS)
def test_unknown_name_lists_available(kind):
    getter = getattr(registry, "get_" + kind.replace(" ", "_"))
    available = ", ".join(registry.names(kind)) or "none installed"
    with pytest.raises(RagloopError) as info:
        getter("nope")
    assert info.value.message == f"unknown {kind} 'nope'; available: {available}"


def test_unknown_loader_exact_message():
    with pytest.raises(RagloopError, match=r"^unknown loader 'nope'; available: .*\btext\b"):
        registry.get_loader("nope")


def test_duplicate_name_keeps_the_first(fresh_plugins, capsys):
    class Impostor(kinds.Loader):
        name = "text"

    class Plugin:
        @hookimpl
        def register_loaders(self, register):
            register(Impostor)

    with registered(Plugin()):
        assert registry.get_loader("text") is not Impostor
    assert capsys.readouterr().err == (
        "Warning: loader 'text' from plugin 'test-plugin' is already registered by "
        "'ragloop.plugins.loaders.text'; the first one is kept\n")


def test_class_without_name_is_skipped_with_a_warning(fresh_plugins, capsys):
    class Nameless(kinds.Loader):
        pass

    class Plugin:
        @hookimpl
        def register_loaders(self, register):
            register(Nameless)

    with registered(Plugin(), name="test-nameless"):
        assert "text" in registry.names("loader")
    err = capsys.readouterr().err
    assert err.startswith("Warning: plugin 'test-nameless' failed in register_loaders (TypeError: ")
    assert err.endswith("has no `name` attribute); skipped\n") and err.count("\n") == 1
