"""FAISS vector store: inner product on normalized vectors, ids equal to chunk row ids.

Exact flat search (IndexIDMap2 over IndexFlatIP) by default; with ``kind=auto`` the store
switches to IVF (trained on the stored vectors) once it holds ``ivf_threshold`` vectors.
Saved atomically: serialized in memory, then temp file + fsync + os.replace.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ragloop.core import RagloopError, Store, atomic_write_bytes, hookimpl

INDEX_FILE = "vectors.faiss"


@dataclass
class FaissConfig:
    kind: Literal["auto", "flat", "ivf"] = field(
        default="auto", metadata={"help": "flat = exact; ivf = approximate; auto = flat, "
                                          "then IVF from ivf_threshold vectors on."})
    ivf_threshold: int = field(default=200_000, metadata={
        "help": "Vector count at which kind=auto switches from flat to IVF."})
    nprobe: int = field(default=32, metadata={"help": "IVF lists searched per query."})

    def __post_init__(self):
        if self.ivf_threshold < 1000:
            raise ValueError("ivf_threshold must be at least 1000 (IVF needs training data)")
        if self.nprobe < 1:
            raise ValueError("nprobe must be at least 1")


def _ids_array(ids):
    import numpy as np
    return np.ascontiguousarray(np.asarray(ids, dtype="int64"))


class FaissStore(Store):
    name = "faiss"
    description = "FAISS: exact flat search, IVF above a configurable size."
    Config = FaissConfig

    def __init__(self, config, directory: Path, dimension: int, workspace=None):
        super().__init__(config, directory, dimension, workspace)
        self.path = self.directory / INDEX_FILE
        self._index = None

    @property
    def index(self):
        if self._index is None:
            self._index = self._load() if self.path.exists() else self._new_flat()
        return self._index

    def _new_flat(self):
        import faiss
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))

    def _load(self):
        import faiss
        import numpy as np
        try:
            index = faiss.deserialize_index(np.fromfile(self.path, dtype="uint8"))
        except Exception as exc:
            raise RagloopError(f"the vector index {self.path} is corrupt ({str(exc).splitlines()[0]}); "
                               f"run `ragloop index --repair`") from None
        if index.d != self.dimension:
            raise RagloopError(f"the vector index {self.path} has {index.d} dimensions, the embedder "
                               f"{self.dimension}; run `ragloop index --repair`")
        if hasattr(index, "nprobe"):
            index.nprobe = self.config.nprobe
        return index

    @property
    def kind(self) -> str:
        return "ivf" if hasattr(self.index, "nprobe") else "flat"

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self):
        """Every stored id, as an int64 numpy array."""
        import faiss
        import numpy as np
        index = self.index
        if self.kind == "flat":
            return faiss.vector_to_array(index.id_map).astype("int64")
        lists = index.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(index.nlist) if lists.list_size(i)]
        return np.concatenate(parts).astype("int64") if parts else np.zeros(0, "int64")

    def add(self, ids, vectors) -> None:
        import numpy as np
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype="float32")
        self.index.add_with_ids(vectors, _ids_array(ids))
        self._maybe_switch()

    def remove(self, ids) -> None:
        if len(ids):
            self.index.remove_ids(_ids_array(ids))

    def vectors(self, ids):
        import numpy as np
        if not len(ids):
            return np.zeros((0, self.dimension), "float32")
        return self.index.reconstruct_batch(_ids_array(ids))

    def search(self, vectors, k: int):
        import numpy as np
        vectors = np.ascontiguousarray(vectors, dtype="float32")
        if len(self) == 0:
            n = len(vectors)
            return np.zeros((n, k), "float32"), np.full((n, k), -1, "int64")
        return self.index.search(vectors, k)

    def _maybe_switch(self) -> None:
        """Flat search is memory-bound and linear in size; past the threshold, IVF."""
        cfg = self.config
        wants_ivf = cfg.kind == "ivf" or (cfg.kind == "auto" and len(self) >= cfg.ivf_threshold)
        if self.kind == "flat" and wants_ivf and len(self) >= 1000:
            self._index = self._to_ivf(self.index)

    def _to_ivf(self, flat):
        import faiss
        ids = faiss.vector_to_array(flat.id_map).astype("int64")
        vectors = flat.index.reconstruct_n(0, flat.ntotal)
        # FAISS wants >= 39 training points per list; 4·sqrt(n) lists is its usual advice.
        nlist = max(8, min(int(4 * math.sqrt(len(ids))), len(ids) // 39))
        quantizer = faiss.IndexFlatIP(self.dimension)
        ivf = faiss.IndexIVFFlat(quantizer, self.dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)   # lets remove_ids work
        ivf.add_with_ids(vectors, ids)
        ivf.nprobe = self.config.nprobe
        return ivf

    def serialize(self) -> bytes:
        import faiss
        return faiss.serialize_index(self.index).tobytes()

    def save(self, data: bytes | None = None) -> str:
        data = self.serialize() if data is None else data
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, data)
        return checksum(data)

    def file_checksum(self) -> str | None:
        return checksum(self.path.read_bytes()) if self.path.exists() else None


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@hookimpl
def register_stores(register):
    register(FaissStore)
