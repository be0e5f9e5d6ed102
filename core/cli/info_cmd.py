"""`ragloop info`: where the workspace is and what it holds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ragloop.core.cli.app import cli, pass_workspace
from ragloop.core.plugins import plugin_infos
from ragloop.core.workspace import FOLDERS


def _folder_summary(path: Path) -> dict:
    files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return {"path": str(path), "files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_workspace
def info(ws, as_json):
    """Show where the workspace is and what it holds."""
    report = {"home": str(ws.home), "exists": ws.db_path.exists(), "database": str(ws.db_path)}
    if report["exists"]:
        db = ws.db
        report["database_bytes"] = ws.db_path.stat().st_size
        # Internal tables (migrations, FTS shadows, AUTOINCREMENT's counters) are not content.
        report["tables"] = {t: db[t].count for t in db.table_names()
                            if not t.startswith(("_", "sqlite_")) and "_fts" not in t}
        report["migrations"] = db.execute(
            "select count(*) from _sqlite_migrations").fetchone()[0]
        report["folders"] = {name: _folder_summary(ws.folder(name)) for name in FOLDERS}
    report["plugins"] = {"builtin": sum(i.builtin for i in plugin_infos(True)),
                         "installed": sum(not i.builtin for i in plugin_infos(True))}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"Workspace: {report['home']}")
    if not report["exists"]:
        click.echo("  (not created yet: the first command that stores something creates it)")
    else:
        click.echo(f"Database:  {report['database']} ({_human(report['database_bytes'])}, "
                   f"{report['migrations']} migrations applied)")
        for table, count in report["tables"].items():
            click.echo(f"  {table}: {count} row{'' if count == 1 else 's'}")
        for name, folder in report["folders"].items():
            click.echo(f"{name.capitalize() + ':':<10} {folder['path']} "
                       f"({folder['files']} files, {_human(folder['bytes'])})")
    p = report["plugins"]
    click.echo(f"Plugins:   {p['builtin']} built-in, {p['installed']} installed "
               f"(`ragloop plugins --all`)")
