"""Streaming text out of `model.generate` on the caller's own thread.

`generate` takes a streamer it calls back with each new token; the caller wants to pull pieces
from an iterator. A background thread would bridge the two, but torch runs slower off the main
thread: there its OpenMP team does not stay warm between the many tiny ops of a decode step
(measured: int8-dynamic matmuls ~2x slower per call, which cost int8 most of its gain). So
`generate` runs in a greenlet, on this same thread, and the streamer switches back to the
caller with each piece: one thread, no queue, and Ctrl-C lands in `generate` itself.
"""

from __future__ import annotations

from typing import Iterator

_DONE = object()


def stream_generate(model, tokenizer, generate_kwargs: dict, outcome: dict) -> Iterator[str]:
    """Yield text pieces of `model.generate(**generate_kwargs)` (the prompt excluded).

    Fills `outcome` with "output" (the token ids generate returned) or "error" (what it
    raised, re-raised here), and "finished" (False when the caller stopped reading early). A
    caller that stops early (break, close) stops the model at its next token."""
    import torch
    from greenlet import getcurrent, greenlet
    from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

    cancelled = False
    caller = getcurrent()
    caller_grad = [torch.is_grad_enabled()]

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancelled, dtype=torch.bool,
                              device=input_ids.device)

    class Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                # Inference mode and no-grad are per thread: the caller's code between pieces
                # runs with its own settings, not generate's.
                with torch.inference_mode(False), torch.set_grad_enabled(caller_grad[0]):
                    caller.switch(text)

    streamer = Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(generate_kwargs, streamer=streamer,
                  stopping_criteria=StoppingCriteriaList([Cancelled()]))

    def run():
        try:
            with torch.inference_mode():
                outcome["output"] = model.generate(**kwargs)
        except BaseException as exc:      # KeyboardInterrupt too: the caller re-raises it
            outcome["error"] = exc
        return _DONE

    def resume():
        caller_grad[0] = torch.is_grad_enabled()
        return worker.switch()

    outcome["finished"] = False
    worker = greenlet(run)
    try:
        piece = resume()
        while piece is not _DONE:
            yield piece
            piece = resume()
        outcome["finished"] = True
    finally:
        cancelled = True
        while not worker.dead:           # the stopping criterion ends it at its next token
            resume()
    if "error" in outcome:
        raise outcome["error"]
