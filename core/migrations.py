"""The core's migration set: tables every workspace has. Append only, never edit."""

from sqlite_utils.migrations import Migrations

core_migrations = Migrations("ragloop.core")


@core_migrations()
def m001_create_settings(db):
    # Workspace-wide settings, such as the adapter `ragloop adapters use` picked.
    db["settings"].create({"key": str, "value_json": str, "updated_at": str},
                          pk="key", if_not_exists=True)
