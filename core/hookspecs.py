"""The hooks a ragloop plugin can implement. Every feature, built-in or not, arrives through them."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("ragloop")
hookimpl = HookimplMarker("ragloop")


@hookspec
def register_commands(cli):
    """Add click commands or groups to the `ragloop` CLI group `cli`."""


@hookspec
def register_loaders(register):
    """Register document loaders: call `register(LoaderClass)` for each."""


@hookspec
def register_chunkers(register):
    """Register chunkers that split documents into passages: `register(ChunkerClass)`."""


@hookspec
def register_embedders(register):
    """Register text embedders: `register(EmbedderClass)`."""


@hookspec
def register_stores(register):
    """Register vector stores: `register(StoreClass)`."""


@hookspec
def register_rerankers(register):
    """Register rerankers that reorder search candidates, e.g. cross-encoders: `register(RerankerClass)`."""


@hookspec
def register_generators(register):
    """Register answer generators (language models): `register(GeneratorClass)`."""


@hookspec
def register_prompts(register):
    """Register prompts (question and passages to chat messages): `register(PromptClass)`."""


@hookspec
def register_raters(register):
    """Register raters that compare two candidate answers: `register(RaterClass)`."""


@hookspec
def register_filters(register):
    """Register data filters for documents or training rows: `register(FilterClass)`."""


@hookspec
def register_row_formats(register):
    """Register file formats for training rows: `register(RowFormatClass)`."""


@hookspec
def register_training_methods(register):
    """Register training methods (DPO, KTO, SFT, ...): `register(TrainingMethodClass)`."""


@hookspec
def register_training_backends(register):
    """Register training backends that run a method in one or more processes: `register(BackendClass)`."""


@hookspec
def register_compressors(register):
    """Register model compressors (quantization, pruning): `register(CompressorClass)`."""


@hookspec
def register_distillers(register):
    """Register teacher-to-student distillers: `register(DistillerClass)`."""


@hookspec
def register_evaluators(register):
    """Register evaluators that score a model, adapter or index: `register(EvaluatorClass)`."""
