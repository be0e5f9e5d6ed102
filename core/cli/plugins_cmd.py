"""`ragloop plugins`, `install` and `uninstall`."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from ragloop.core.cli.app import cli
from ragloop.core.errors import RagloopError
from ragloop.core.plugins import allowlist_report, hook_names, plugin_infos, warn


@cli.command(name="plugins")
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--hook", "hook", metavar="NAME", help="Only plugins that implement this hook.")
@click.option("--hooks", "list_hooks", is_flag=True, help="List the hooks a plugin can implement.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
def plugins_command(show_all, hook, list_hooks, as_json):
    """List plugins, their hooks and versions."""
    if list_hooks:
        names = hook_names()
        click.echo(json.dumps(names, indent=2) if as_json else "\n".join(names))
        return
    if hook and hook not in hook_names():
        raise RagloopError(f"unknown hook {hook!r}; hooks: {', '.join(hook_names())}")
    infos = [i for i in plugin_infos(include_builtin=show_all) if not hook or hook in i.hooks]
    installed, hidden, unknown = allowlist_report()
    if unknown:
        _warn_unknown(unknown, installed)
    note = _hidden_note(hidden)
    if as_json:
        click.echo(json.dumps([{"name": i.name, "version": i.version, "builtin": i.builtin,
                                "hooks": i.hooks} for i in infos], indent=2))
        if note:                       # stdout stays the JSON list scripts parse
            click.echo(note, err=True)
        return
    if not infos:
        hint = "" if show_all else " (built-ins are shown with --all)"
        # "installed" would be false when the allowlist hides an installed plugin.
        click.echo(f"No plugins {'loaded' if hidden else 'installed'}{hint}.")
    for info in infos:
        tag = " (built-in)" if info.builtin else ""
        click.echo(f"{info.name} {info.version}{tag}")
        click.echo(f"  hooks: {', '.join(info.hooks) or '-'}")
    if note:
        click.echo(note)


def _hidden_note(hidden: list[str]) -> str:
    if not hidden:
        return ""
    one = len(hidden) == 1
    return (f"{len(hidden)} installed plugin{'' if one else 's'} {'is' if one else 'are'} "
            f"hidden by RAGLOOP_LOAD_PLUGINS: {', '.join(hidden)}; add {'it' if one else 'them'} "
            f"to the list, or unset the variable to load every installed plugin.")


def _warn_unknown(unknown: list[str], installed: list[str]) -> None:
    """A misspelt allowlist entry silently loads nothing: name it, with what is installed."""
    if len(unknown) == 1:
        warn(f"RAGLOOP_LOAD_PLUGINS names {unknown[0]}, which is not installed (installed: "
             f"{', '.join(installed) or 'none'}); fix the name, or install it with "
             f"`ragloop install {unknown[0]}`")
    else:
        warn(f"RAGLOOP_LOAD_PLUGINS names {', '.join(unknown)}, which are not installed "
             f"(installed: {', '.join(installed) or 'none'}); fix the names, or install them "
             f"with `ragloop install NAME`")


def _pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args])
    if result.returncode != 0:
        raise RagloopError(f"pip {args[0]} failed (exit {result.returncode}); see pip's output above")


@cli.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-e", "--editable", is_flag=True, help="Install a local folder in editable mode.")
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade to the newest version.")
def install(packages, editable, upgrade):
    """Install plugins into ragloop's environment.

    PACKAGES are PyPI names or local paths; pip runs in the same environment as ragloop.
    """
    args = ["install"]
    if upgrade:
        args.append("--upgrade")
    for package in packages:
        args += ["-e", package] if editable else [package]
    _pip(*args)


@cli.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(packages, yes):
    """Uninstall plugins from ragloop's environment."""
    _pip("uninstall", *(["-y"] if yes else []), *packages)
