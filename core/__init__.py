"""ragloop's public API: what a plugin author or a Python user imports, all from `ragloop.core`.

Plugins import only the names listed here (a test enforces it); every other module under
`ragloop.core` may change without notice. Names resolve lazily on first use, so importing
`ragloop.core` stays cheap for every CLI start. The map of the code is docs/architecture.md.
"""

from importlib import import_module

from ragloop.core.quiet import no_call_home

__version__ = "0.1.0"

no_call_home()      # before any library that could call home is imported

# public name -> module that defines it (relative to ragloop.core)
_EXPORTS = {
    # hooks (plugins implement them with @hookimpl)
    "hookimpl": "hookspecs", "hookspec": "hookspecs",
    # base classes: what core calls on each kind of component
    **{name: "components" for name in (
        "Component", "NoOptions", "Document", "SkipFile", "Loader", "Chunk", "Chunker",
        "Embedder", "Store", "Reranker", "Generator", "Comparison", "Verdict", "StopRating",
        "Rater", "FilterResult", "Filter", "TrainingMethod", "TrainingBackend", "Compressor",
        "Distiller", "Evaluator")},
    "RowFormat": "components",
    "RagloopError": "errors",
    # the workspace and safe writes
    "Workspace": "workspace", "atomic_write_bytes": "workspace", "utcnow": "workspace",
    "atomic_folder": "workspace", "replace_folder": "workspace",
    "write_transaction": "workspace",
    # the record schema: documents and training rows (pairs, kto, sft)
    **{name: "rows" for name in (
        "RECORD_KINDS", "ROW_KINDS", "ROW_FIELDS", "TEXT_FIELDS", "ANSWER_FIELDS", "ROW_NOUNS",
        "row_kind", "record_kind", "joined", "noun", "describe")},
    # options (-o key=value) and the component registries
    "build_config": "config", "option_help": "config", "registry": None,
    "quiet_library_logs": "quiet",
    # the pipeline services a plugin may call
    "Searcher": "pipeline.search",
    "read_questions": "pipeline.rating_questions",
    "DEFAULT_GENERATOR": "pipeline.ask", "load_generator": "pipeline.ask",
    "prepare": "pipeline.ask", "resolve_adapter": "pipeline.ask",
    "METADATA": "pipeline.adapters", "find_adapter": "pipeline.adapters",
    "get_adapter": "pipeline.adapters", "read_metadata": "pipeline.adapters",
    "check_base": "pipeline.adapters", "require_lora": "pipeline.adapters",
    "write_folder": "pipeline.adapters",
    "latest_votes": "pipeline.prefs", "majority": "pipeline.prefs",
    "TrainSettings": "pipeline.training", "TrainingJob": "pipeline.training",
    "prepare_training": "pipeline.training", "run_training": "pipeline.training",
    "TrainingData": "pipeline.training_data", "select": "pipeline.training_data",
    "read_record": "pipeline.training_runs", "read_rows": "pipeline.training_runs",
    "all_of": "pipeline.filtering", "build_chain": "pipeline.filtering",
    "run_chain": "pipeline.filtering", "build_rows": "pipeline.prefs",
    "Indexer": "pipeline.ingest", "indexed_documents": "pipeline.ingest",
    # for plugins that add commands (register_commands)
    "options_option": "cli.app", "pass_workspace": "cli.app",
    "progress_bar": "cli.progress", "status": "cli.progress", "stderr": "cli.progress",
    "run_reported": "cli.train_cmd",
    "cli": None,    # the command line; cli.cli is the `ragloop` group, e.g. for CliRunner tests
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ragloop.core' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module is None:      # a whole kernel module, e.g. `registry`
        return import_module(f"ragloop.core.{name}")
    value = getattr(import_module(f"ragloop.core.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
