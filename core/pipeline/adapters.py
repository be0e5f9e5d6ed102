"""The adapter registry: one folder per adapter under <workspace>/adapters/<name>/.

A folder holds what the training method saved (a PEFT adapter: adapter_config.json and
adapter_model.safetensors; or, for `--full`, a whole model) plus `ragloop-adapter.json`: the
method, the base model, metrics and lineage (dataset hash, rating ids, run id). The folder
is the registry entry: there is no table to keep in step, `export` carries the record along,
and `rm` removes both at once. Folders are written into a hidden temp folder beside their
final place and renamed into it, so a crash or a full disk leaves no half-written adapter.

A NAME is what `train --name` accepts (check_name) and always means <workspace>/adapters/NAME;
only find_adapter (ask, rate, eval, compress) also takes a folder the user points at, and
`rm` deletes nothing but an entry of <workspace>/adapters/.

    list_adapters(ws) -> list[dict]          get_adapter(ws, name) -> dict
    save_adapter(ws, name, write, meta)      check_base(meta, model_id)
    use_adapter(ws, name | None)             remove_adapter(ws, name)
    require_lora(meta, what)                 require_chat(meta, what)
    export_adapter(ws, name, out)            merge_adapter(ws, name, out, generator)
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

from ragloop.core.errors import RagloopError
from ragloop.core.ids import new_id
from ragloop.core.workspace import atomic_folder, utcnow

METADATA = "ragloop-adapter.json"
ADAPTER_SETTING = "default_adapter"     # the workspace setting `adapters use` sets
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise RagloopError(f"adapter name {name!r} must start with a letter or digit and hold "
                           f"only letters, digits, '.', '_' and '-' (at most 100)")
    return name


def read_metadata(folder: Path) -> dict:
    """The folder's record; a folder without one (a PEFT adapter copied in by hand) gets
    what can be read from adapter_config.json."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
        try:
            peft = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
            meta = {"kind": "lora", "base_model": peft.get("base_model_name_or_path")}
            if peft.get("task_type") == "SEQ_CLS":     # a score head: what `train --method reward` makes
                meta["method"] = "reward"
        except (OSError, ValueError):
            meta = {"kind": "full" if (folder / "config.json").exists() else "unknown"}
    meta.setdefault("name", folder.name)
    meta["path"] = str(folder)
    return meta


def list_adapters(ws) -> list[dict]:
    """Every adapter in the workspace, oldest first (hidden temp folders are skipped)."""
    root = Path(ws.adapters_dir)
    if not root.is_dir():
        return []
    found = [read_metadata(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    default = ws.get_setting(ADAPTER_SETTING)
    for meta in found:
        meta["default"] = meta["name"] == default
    return sorted(found, key=lambda m: (m.get("created_at") or "", m["name"]))


def _known(ws) -> str:
    return ", ".join(m["name"] for m in list_adapters(ws)) or "none yet; run `ragloop train`"


def _folder(ws, name: str) -> Path:
    """<workspace>/adapters/NAME for a valid NAME (so never a path that leaves the folder)."""
    try:
        check_name(name)
    except RagloopError as exc:
        raise RagloopError(f"{exc}; give the name of one of the workspace's adapters: "
                           f"{_known(ws)}") from None
    return Path(ws.adapters_dir) / name


def get_adapter(ws, name: str) -> dict:
    """The record of the workspace's adapter NAME; a path or a bad name is refused."""
    folder = _folder(ws, name)
    if not folder.is_dir():
        raise RagloopError(f"no adapter named {name!r}; adapters: {_known(ws)}")
    meta = read_metadata(folder)
    meta["default"] = ws.get_setting(ADAPTER_SETTING) == name
    return meta


def find_adapter(ws, name: str) -> dict:
    """The record of an adapter named in the workspace or given as a folder; a bare name in
    the workspace wins over a folder of that name here (`./NAME` means the folder). Else
    get_adapter's error."""
    path = Path(name).expanduser()
    bare = Path(name).name == name and not name.startswith(".")
    if bare and ((Path(ws.adapters_dir) / name).is_dir() or not path.is_dir()):
        return get_adapter(ws, name)
    if not path.is_dir():
        raise RagloopError(f"no adapter folder {name}; give an adapter folder, or the name of "
                           f"one of the workspace's adapters: {_known(ws)}")
    return read_metadata(path.resolve())


def check_base(meta: dict, model_id: str, checkpoint: str | None = None) -> None:
    """Refuse an adapter trained on another base model than `model_id`. Records written
    before ids were taken from the model's content hold a local base's path: that path is
    still accepted for the folder `checkpoint` names."""
    base = meta.get("base_model_id")
    legacy = (checkpoint and base and os.path.isabs(base)
              and Path(base).resolve() == Path(checkpoint).expanduser().resolve())
    if base and base != model_id and not legacy:
        raise RagloopError(f"adapter {meta['name']!r} was trained on {base}, not on {model_id}; "
                           f"pick that base model with -o model=..., or another adapter")


def require_chat(meta: dict, what: str) -> None:
    """Refuse a reward model: its LoRA was trained under a score head, and a chat model that
    loads it drops the head and answers with weights that were never trained to write."""
    if meta.get("method") == "reward":
        raise RagloopError(f"{meta['name']!r} is a reward model (a score head), not a chat "
                           f"adapter, so it cannot be {what}; it scores answers for "
                           f"`ragloop train --method rlhf -o reward_adapter={meta['name']}`")


def require_lora(meta: dict, what: str) -> None:
    """A LoRA adapter for chat: not a full model, not a reward model."""
    if meta.get("kind") == "full":
        raise RagloopError(f"{meta['name']!r} is a full model (trained with --full), not an "
                           f"adapter, so it cannot be {what}; load it with -o model={meta['path']}")
    require_chat(meta, what)


def _disk_error(exc: OSError, what: str) -> RagloopError:
    if exc.errno == errno.ENOSPC:
        return RagloopError(f"the disk is full while {what}; nothing was kept")
    return RagloopError(f"cannot finish {what} ({exc.strerror or exc}); nothing was kept")


def write_folder(target: Path, write, what: str, replace: bool = False) -> Path:
    """Run `write(tmp)` into a temp folder beside `target`, then swap it into place
    (`atomic_folder`). Any failure removes the temp folder; a full disk becomes a one-line
    error. Only an empty folder is replaced, and only with `replace`."""
    target = Path(target)
    if target.exists() and not (replace and target.is_dir() and not any(target.iterdir())):
        raise RagloopError(f"{target} already exists; choose another name or remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_folder(target) as tmp:
            write(tmp)
    except OSError as exc:
        raise _disk_error(exc, what) from None
    return target


def save_adapter(ws, name: str, write, meta: dict) -> Path:
    """Register an adapter: `write(folder)` saves the weights, then the record is added."""
    check_name(name)

    def write_all(tmp: Path) -> None:
        write(tmp)
        record = {"name": name, "created_at": utcnow(), **meta}
        (tmp / METADATA).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")

    return write_folder(Path(ws.adapters_dir) / name, write_all, f"saving adapter {name!r}")


def use_adapter(ws, name: str | None) -> dict | None:
    """Make `ask` and `rate` use this adapter by default; None clears the default."""
    if name is None:
        ws.set_setting(ADAPTER_SETTING, None)
        return None
    meta = get_adapter(ws, name)
    require_lora(meta, "used by `ask`")
    ws.set_setting(ADAPTER_SETTING, name)
    return meta


def remove_adapter(ws, name: str) -> dict:
    """Delete <workspace>/adapters/NAME; a link there is removed, never what it points at."""
    meta = get_adapter(ws, name)
    folder = _folder(ws, name)
    if folder.is_symlink():
        folder.unlink()
    else:
        # Renamed first, so the name is free at once even if deleting the files is interrupted.
        doomed = folder.with_name(f".{folder.name}.{new_id()}.removed.tmp")
        os.rename(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)      # does not follow links inside
    if meta["default"]:
        ws.set_setting(ADAPTER_SETTING, None)
    return meta


def export_adapter(ws, name: str, out: Path) -> Path:
    meta = get_adapter(ws, name)
    return write_folder(Path(out), lambda tmp: shutil.copytree(meta["path"], tmp,
                                                               dirs_exist_ok=True),
                        f"exporting {name!r}", replace=True)


def merge_adapter(ws, name: str, out: Path, generator) -> Path:
    """Write base model + adapter as one standalone model folder that loads without PEFT:
    `generator.save_merged` writes the model (the transformers generator: safetensors,
    float32), then the adapter's record goes beside it in ragloop-merged.json."""
    meta = get_adapter(ws, name)
    require_lora(meta, "merged")
    check_base(meta, generator.model_id)

    def write(tmp: Path) -> None:
        generator.save_merged(meta, tmp)
        record = {k: v for k, v in meta.items() if k not in ("path", "default")}
        (tmp / "ragloop-merged.json").write_text(json.dumps(
            {"merged_at": utcnow(), "adapter": record}, indent=2, default=str), encoding="utf-8")

    return write_folder(Path(out), write, f"merging {name!r} into {out}", replace=True)
