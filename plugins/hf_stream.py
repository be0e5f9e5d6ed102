"""Streaming text out of `model.generate`: generation runs in a background thread feeding a
TextIteratorStreamer; the caller's thread reads pieces as they are decoded."""

from __future__ import annotations

import queue
import threading
from typing import Iterator

THREAD_NAME = "ragloop-generate"


def stream_generate(model, tokenizer, generate_kwargs: dict, outcome: dict) -> Iterator[str]:
    """Yield text pieces of `model.generate(**generate_kwargs)` (the prompt excluded).

    Fills `outcome` with "output" (the token ids generate returned) or "error" (what it
    raised, re-raised here after the thread is joined), and "finished" (False when the
    caller stopped reading early). A caller that stops early (break, Ctrl-C) stops the
    model at its next token instead of leaving it running in the background."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    cancel = threading.Event()

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    # The timeout lets the reader notice a thread that died without ending the stream.
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                    timeout=0.2)
    kwargs = dict(generate_kwargs, streamer=streamer,
                  stopping_criteria=StoppingCriteriaList([Cancelled()]))

    def run():
        try:
            outcome["output"] = model.generate(**kwargs)
        except BaseException as exc:
            outcome["error"] = exc
            streamer.end()

    outcome["finished"] = False
    thread = threading.Thread(target=run, name=THREAD_NAME, daemon=True)
    thread.start()
    try:
        yield from _drain(streamer, thread)
        outcome["finished"] = True
    finally:
        cancel.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]


def _drain(streamer, thread) -> Iterator[str]:
    """Pieces from the streamer until it ends; a dead generation thread also ends it (after
    one more look at the queue, so nothing it put there is lost)."""
    thread_gone = False
    while True:
        try:
            piece = next(streamer)
        except StopIteration:
            return
        except queue.Empty:
            if thread.is_alive():
                continue
            if thread_gone:
                return
            thread_gone = True
            continue
        if piece:
            yield piece
