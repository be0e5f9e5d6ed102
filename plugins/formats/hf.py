"""`datasets` folders: what `Dataset.save_to_disk` writes and `datasets.load_from_disk`
opens. `datasets` is imported only when a folder is written or read."""

from __future__ import annotations

from pathlib import Path

from ragloop.core import RagloopError, RowFormat, atomic_folder, hookimpl


class DatasetsFolder(RowFormat):
    name = "hf"
    description = "A folder for datasets.load_from_disk."
    noun = "a datasets folder"
    writes_folder = True

    def recognizes(self, path: Path) -> bool:
        # save_to_disk writes dataset_info.json for a Dataset, dataset_dict.json for splits
        return path.is_dir() and ((path / "dataset_info.json").exists()
                                  or (path / "dataset_dict.json").exists())

    def write(self, rows: list[dict], out: Path) -> None:
        from datasets import Dataset
        from datasets.utils.logging import disable_progress_bar
        disable_progress_bar()
        with atomic_folder(out) as tmp:
            Dataset.from_list(rows).save_to_disk(str(tmp))

    def read(self, path: Path) -> tuple[list[tuple[int, object]], str]:
        from datasets import DatasetDict, load_from_disk
        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if len(ds) != 1:
                raise RagloopError(f"{path} holds splits {', '.join(ds)}; import one split")
            ds = next(iter(ds.values()))
        return list(enumerate(ds.to_list(), 1)), "row"


@hookimpl
def register_row_formats(register):
    register(DatasetsFolder)
