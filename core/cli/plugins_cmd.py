"""`ragloop plugins`, `install` and `uninstall`."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from ..errors import RagloopError
from ..plugins import hook_names, plugin_infos
from .app import cli


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
    if as_json:
        click.echo(json.dumps([{"name": i.name, "version": i.version, "builtin": i.builtin,
                                "hooks": i.hooks} for i in infos], indent=2))
        return
    if not infos:
        hint = "" if show_all else " (built-ins are shown with --all)"
        click.echo(f"No plugins installed{hint}.")
        return
    for info in infos:
        tag = " (built-in)" if info.builtin else ""
        click.echo(f"{info.name} {info.version}{tag}")
        click.echo(f"  hooks: {', '.join(info.hooks) or '-'}")


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
