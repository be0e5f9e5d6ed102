"""Small helpers shared by the built-in Hugging Face plugins (embedder and generator)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

from ragloop.core.quiet import quiet_library_logs


def short_error(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line, for messages that must stay on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quiet_transformers() -> None:
    """HF warnings and progress bars are for library authors, not for ragloop's users."""
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    quiet_library_logs("sentence_transformers", "peft", "huggingface_hub")
    try:
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()
    except ImportError:
        pass


def looks_like_path(name: str) -> bool:
    """Hub ids are `owner/name` or `name`; anything else is meant as a folder."""
    return (name.startswith((".", "/", "~", "\\")) or name.count("/") > 1
            or "\\" in name or (len(name) > 1 and name[1] == ":"))


def token_encoder(tokenizer):
    """`text -> token ids`, without special tokens added, truncation or padding.

    The Rust tokenizer inside a fast HF tokenizer keeps whatever truncation its last batch
    call set (sentence-transformers truncates to max_seq_length), so counts taken through
    it directly stop at that limit; a private copy with truncation off counts everything,
    and skips the "sequence is longer than the maximum" warning as well."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return lambda text: tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    from tokenizers import Tokenizer
    plain = Tokenizer.from_str(backend.to_str())
    plain.no_truncation()
    plain.no_padding()
    return lambda text: plain.encode(text, add_special_tokens=False).ids


@contextmanager
def library_warnings_hidden():
    """Deprecation notices raised inside transformers/peft/sentence-transformers speak to
    library authors about each other's APIs; a ragloop user can do nothing about them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
