"""ragloop's public API: what a plugin author or a Python user imports, all from `ragloop.core`.

Plugins import only the names listed here (a test enforces it); every other module under
`ragloop.core` may change without notice. Names resolve lazily on first use, so importing
`ragloop.core` stays cheap for every CLI start. The map of the code is docs/architecture.md.
"""

from importlib import import_module

from ragloop.core.quiet import no_call_home

__version__ = "0.1.0"

no_call_home()      # before any library that could call home is imported

# module (relative to ragloop.core; None: the module itself) -> the public names it defines
_PUBLIC = {
    # hooks (plugins implement them with @hookimpl) and the component registries
    "hookspecs": ("hookimpl", "hookspec"),
    None: ("registry", "cli"),      # cli.cli is the `ragloop` group, e.g. for CliRunner tests
    # base classes: what core calls on each kind of component
    "components": (
        "Component", "NoOptions", "Document", "SkipFile", "Loader", "Chunk", "Chunker",
        "Embedder", "Store", "Reranker", "Generator", "Prompt", "Comparison", "Verdict",
        "StopRating", "Rater", "FilterResult", "Filter", "TrainingMethod", "TrainingBackend",
        "Compressor", "Distiller", "Evaluator", "RowFormat"),
    "errors": ("RagloopError",),
    # the workspace and safe writes
    "workspace": ("Workspace", "atomic_write_bytes", "atomic_folder", "replace_folder",
                  "write_transaction", "utcnow"),
    # the record schema: documents and training rows (pairs, kto, sft)
    "rows": ("RECORD_KINDS", "ROW_KINDS", "ROW_FIELDS", "TEXT_FIELDS", "ANSWER_FIELDS",
             "ROW_NOUNS", "row_kind", "record_kind", "joined", "noun", "describe"),
    # options (-o key=value)
    "config": ("build_config", "option_help"),
    "quiet": ("quiet_library_logs",),
    # the pipeline services a plugin may call
    "pipeline.search": ("Searcher",),
    "pipeline.ingest": ("Indexer", "indexed_documents"),
    "pipeline.ask": ("DEFAULT_GENERATOR", "load_generator", "prepare", "resolve_adapter"),
    # the Python API: a workspace kept open, its models loaded once (docs/python-api.md)
    "pipeline.session": ("Ragloop", "answer_sources"),
    "pipeline.rating_questions": ("read_questions",),
    "pipeline.prefs": ("latest_votes", "majority", "build_rows"),
    "pipeline.filtering": ("all_of", "build_chain", "run_chain"),
    "pipeline.adapters": ("METADATA", "find_adapter", "get_adapter", "read_metadata",
                          "check_base", "require_lora", "write_folder"),
    "pipeline.training": ("TrainSettings", "TrainingJob", "prepare_training", "run_training"),
    "pipeline.training_data": ("TrainingData", "select"),
    "pipeline.training_runs": ("read_record", "read_rows"),
    # for evaluators: the interval on a paired difference (base and adapter on the same items)
    "pipeline.evaluation_report": ("paired_bootstrap",),
    # an answer against a reference answer (the correctness evaluator, the reference rater)
    "pipeline.reference_match": ("normalize_answer", "contains_reference", "token_f1",
                                  "CITATION", "citations"),
    # for plugins that add commands (register_commands)
    "cli.app": ("options_option", "pass_workspace"),
    "cli.progress": ("progress_bar", "status", "stderr"),
    "cli.train_cmd": ("run_reported",),
}
_EXPORTS = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ragloop.core' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module is None:      # a whole module, e.g. `registry`
        return import_module(f"ragloop.core.{name}")
    value = getattr(import_module(f"ragloop.core.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
