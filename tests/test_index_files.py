"""What `ragloop index` does with entries that are not plain files: FIFOs, symlink loops,
very deep folders. Each is skipped with a reason and every good file is still indexed."""

import os
import re
import threading

import pytest
from cli_helpers import emb, run


class FifoWriter:
    """A writer waiting on a FIFO: code that opens the FIFO for reading gets `text` instead
    of hanging, so a regression shows as a failed assertion, not a stuck test. `close()`
    releases the writer if nobody read (a non-blocking reader lets its open return)."""

    def __init__(self, path, text="leaked words from a pipe"):
        self.path = path
        os.mkfifo(path)
        self.thread = threading.Thread(target=self._write, args=(text,), daemon=True)
        self.thread.start()

    def _write(self, text):
        with open(self.path, "w") as f:
            f.write(text)

    def close(self):
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.thread.join()
        os.close(fd)


@pytest.fixture
def fifo(tmp_path):
    writers = []

    def make(path):
        writers.append(FifoWriter(path))
        return path
    yield make
    for writer in writers:
        writer.close()


@pytest.fixture
def deep_folder():
    """`deep_folder(root, depth)`: nested folders made one at a time (os.makedirs recurses),
    removed bottom-up afterwards: pytest's own clean-up (shutil.rmtree) recurses too."""
    made = []

    def make(root, depth):
        path = root
        for _ in range(depth):
            path = path / "d"
            path.mkdir()
            made.append(path)
        return path
    yield make
    for folder in reversed(made):
        for child in folder.iterdir():
            if not child.is_dir() or child.is_symlink():
                child.unlink()
        folder.rmdir()


def test_fifo_symlink_loop_and_deep_folder_are_skipped_and_the_rest_indexed(tmp_path, fifo,
                                                                          deep_folder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nQuokkas are nocturnal marsupials.\n")
    fifo(docs / "pipe.txt")
    (docs / "loop_a.txt").symlink_to(docs / "loop_b.txt")
    (docs / "loop_b.txt").symlink_to(docs / "loop_a.txt")
    (deep_folder(docs, 1000) / "deep.txt").write_text("Wombats dig burrows far down.\n")
    out = run("index", docs, *emb()).output
    assert "2 added" in out and "3 skipped" in out, out
    assert re.search(r"skipped .*pipe\.txt: a FIFO \(named pipe\), not a regular file", out)
    assert re.search(r"skipped .*loop_a\.txt: symlink loop", out)
    assert re.search(r"skipped .*loop_b\.txt: symlink loop", out)
    assert "leaked" not in run("search", "leaked pipe words", "--mode", "bm25").output
    assert "deep.txt" in run("search", "wombats burrows", "--mode", "bm25").output


def test_a_fifo_named_on_the_command_line_is_a_one_line_error(tmp_path, fifo):
    pipe = fifo(tmp_path / "pipe.txt")
    result = run("index", pipe, ok=False)
    assert result.exit_code == 1
    assert result.output == (f"Error: {pipe} is a FIFO (named pipe), not a file or folder; "
                             f"only regular files are indexed\n")


def test_a_symlink_loop_named_on_the_command_line_is_a_one_line_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    result = run("index", tmp_path / "a", ok=False)
    assert result.output == f"Error: {tmp_path / 'a'} is a symlink loop; give a file or folder\n"


def test_prefs_import_of_a_fifo_is_a_one_line_error(tmp_path, fifo):
    pipe = fifo(tmp_path / "rows.jsonl")
    result = run("prefs", "import", pipe, ok=False)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {pipe} is not a regular file")
    assert len(result.output.splitlines()) == 1
