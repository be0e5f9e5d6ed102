"""Indexing throughput: the `ragloop index` path against a bare SentenceTransformer.encode of
the same chunk texts, in the same process, back to back; then a re-index of the unchanged
corpus against the first run. Targets: ≥ 0.95× bare chunks/s; re-index ≥ 50× faster.

    python bench/bench_index.py [--copies 3]
"""

from __future__ import annotations

import argparse
import shutil
import time

from _common import CORPUS, temp_folder, temp_workspace, timer

from ragloop.core.pipeline.ingest import Indexer, discover
from ragloop.core.pipeline.vector_index import embed_text


def run_index(indexer: Indexer, files) -> Indexer:
    indexer.prepare()
    known = indexer.known()
    for path in files:
        indexer.add_file(path, known)
    indexer.flush()
    return indexer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=3, help="Copies of examples/corpus to index.")
    args = parser.parse_args()
    root = temp_folder("ragloop-bench-corpus-")
    for i in range(args.copies):
        shutil.copytree(CORPUS, root / f"copy{i}")
        for f in (root / f"copy{i}").rglob("*"):     # distinct content, so nothing dedups
            if f.suffix in (".md", ".txt", ".rst"):
                f.write_text(f.read_text() + f"\n\nCopy {i}.\n")
    files = discover([root])
    ws = temp_workspace()
    t: dict[str, float] = {}
    # Set-up paid once per command whatever the corpus size: importing and loading the
    # model, and hashing its weights for the index's embedder id. Reported, not in the ratio.
    with timer(t, "setup"):
        indexer = Indexer(ws)
        model = indexer.index.embedder
        model.encode(["warm up the model and its threads"])
        model.id
    indexer_probe = Indexer(temp_workspace())
    texts = []
    for path in files:                     # the exact texts the index path will embed
        loader = indexer_probe.loaders.get(path.suffix.lower())
        if loader is None:
            continue
        try:
            doc = loader.load(path)
        except Exception:
            continue
        if doc.text.strip():
            texts += [embed_text(c.heading, c.text)
                      for c in indexer_probe.chunker.chunk(doc, model.count_tokens)]

    st = model._model if hasattr(model, "_model") else None
    encode = (lambda xs: st.encode(xs, batch_size=model.config.batch_size,
                                   normalize_embeddings=True)) if st else model.encode
    with timer(t, "bare_1"):
        encode(texts)
    with timer(t, "ragloop"):
        run_index(indexer, files)
    with timer(t, "bare_2"):
        encode(texts)
    with timer(t, "reindex"):
        again = run_index(Indexer(ws), files)
    n = indexer.report.chunks_embedded
    bare = (t["bare_1"] + t["bare_2"]) / 2
    print(f"files {len(files)}, chunks {n} (bare encode of {len(texts)} texts); "
          f"one-off set-up {t['setup']:.2f} s (model load + weights digest)")
    print(f"bare encode:    {len(texts) / bare:7.1f} chunks/s  ({t['bare_1']:.2f} s, {t['bare_2']:.2f} s)")
    print(f"ragloop index:  {n / t['ragloop']:7.1f} chunks/s  ({t['ragloop']:.2f} s, load+chunk+embed+store)")
    print(f"ratio ragloop/bare: {(n / t['ragloop']) / (len(texts) / bare):.3f}  (target >= 0.95)")
    print(f"re-index unchanged: {t['reindex']:.3f} s, {len(again.report.unchanged)} unchanged, "
          f"{again.report.chunks_embedded} embedded; speed-up {t['ragloop'] / t['reindex']:.0f}x "
          f"(target >= 50x)")


if __name__ == "__main__":
    main()
