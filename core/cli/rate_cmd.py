"""`ragloop rate`: a rating session."""

from __future__ import annotations

import sys
from collections import Counter

import click

from ragloop.core import registry
from ragloop.core.cli.app import cli, options_option, pass_workspace
from ragloop.core.cli.progress import status, stderr
from ragloop.core.components import StopRating
from ragloop.core.errors import RagloopError
from ragloop.core.pipeline import rating_questions
from ragloop.core.pipeline.ask import DEFAULT_GENERATOR
from ragloop.core.pipeline.prompt import DEFAULT_PROMPT, route_options
from ragloop.core.pipeline.rating import Session, Settings, load_rater
from ragloop.core.pipeline.rating_batches import Ahead


@cli.command()
@click.option("--questions", "questions_file", metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="Questions, one per line or JSONL with a \"question\" field.")
@click.option("--from-logs", is_flag=True, help="Rate the questions of logged asks.")
@click.option("-n", "limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Rate at most N items this session.")
@click.option("--rater", default="human", show_default=True,
              help="Rater plugin: human, judge, llm-judge, reference (needs reference "
              "answers), or an installed one; its options: -o rater.key=value.")
@click.option("--rater-id", metavar="ID", help="Who is rating; default: your user name for "
              "human, judge@VERSION for the judge.")
@click.option("--candidates", default="sample", show_default=True, metavar="KIND",
              help="sample (two samples of the current model), base-vs-adapter:NAME "
                   "(the base model against that adapter, greedy), or best-of-N (N samples "
                   "ranked by the rater in a round robin; best vs worst is recorded; "
                   "best-of = best-of-4).")
@click.option("--margin", type=float, default=None, metavar="M",
              help="With best-of-N: also record every pair whose round-robin scores differ "
                   "by at least M (0-1) and whose own verdict agrees.")
@click.option("--scores", is_flag=True, help="Also score each answer from 1 to 5.")
@click.option("--passages", is_flag=True, help="Also mark each passage relevant or not.")
@click.option("-k", default=4, show_default=True, help="Passages to retrieve.")
@click.option("--temperature", default=0.8, show_default=True,
              help="Sampling temperature for --candidates sample.")
@click.option("--max-new-tokens", default=256, show_default=True, help="Longest answer, in tokens.")
@click.option("--generator", default=DEFAULT_GENERATOR, show_default=True, help="Generator plugin.")
@click.option("--prompt", "prompt_name", default=DEFAULT_PROMPT, show_default=True,
              metavar="NAME", help="Prompt plugin for both answers (see `ragloop ask --prompt`); "
              "its options: -o NAME.key=value.")
@click.option("--compress", metavar="METHOD", help="Quantize the model as it loads, e.g. "
              "torchao-int8-dynamic (see docs/compression.md).")
@options_option
@pass_workspace
@click.pass_context
def rate(ctx, ws, questions_file, from_logs, limit, rater, rater_id, candidates, margin,
         scores, passages, k, temperature, max_new_tokens, generator, prompt_name, compress,
         options):
    """Compare pairs of answers to build preference data.

    For each question: retrieve passages, generate two answers, show them side by side in
    random order, and store which is better. Each rating is saved the moment it is given;
    run the same command again to continue where you stopped. Questions come from
    --questions FILE, --from-logs, or are typed in. One key per verdict: a, b, t (tie),
    n (both bad), s (skip); c (comment), e (expand passages), q (quit), ? (help). While you
    read, the next item's answers are generated.
    """
    if questions_file and from_logs:
        raise RagloopError("give --questions FILE or --from-logs, not both")
    if compress:               # a generator option, so sessions record it with the others
        registry.get_compressor(compress)
        options = (*options, f"compress={compress}")
    routed, options = route_options(options, [prompt_name, "rater"])
    settings = Settings(candidates, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                        scores=scores, passages=passages, generator=generator,
                        generator_options=tuple(options), prompt=prompt_name,
                        prompt_options=tuple(f"{prompt_name}.{o}" for o in routed[prompt_name]),
                        margin=margin)
    rater_plugin = load_rater(rater, ws, routed["rater"])
    rater_plugin.check()
    if questions_file:
        questions = rating_questions.from_file(questions_file)
    elif from_logs:
        questions = rating_questions.from_logs(ws)
    elif sys.stdin.isatty():
        questions = None
    else:
        raise RagloopError("no questions: give --questions FILE or --from-logs (stdin is not "
                           "a terminal to type them in)")
    questions, left_out = _with_references(questions, rater) if rater_plugin.needs_reference \
        else (questions, "")
    # A person reads while the next answers are generated; an automatic rater waits on
    # nothing, so it gets them in the foreground as before.
    session = Session(ws, rater_plugin, rater, rater_id or rater_plugin.default_rater_id(),
                      settings, skip_rated=True, prefetch=rater_plugin.interactive)
    # A spinner on a terminal; elsewhere (the judge in a log) plain lines, so a long model
    # load or generation is never a silent stretch.
    session.status = status
    try:
        _run(ctx, session, questions, limit, left_out)
    finally:
        session.close()


def _with_references(questions, rater: str) -> tuple[list, str]:
    """The questions that carry a reference answer, and the line that counts the others: a
    rater that decides by the reference has nothing to go on without one, so those are left
    out before anything is generated."""
    needs = (f'the {rater} rater needs questions with a reference answer: give --questions '
             f'FILE, JSONL lines with "question" and "answer"')
    if questions is None:
        raise RagloopError(needs + " (typed questions have none)")
    kept = [q for q in questions if q.answer]
    if not kept:
        raise RagloopError(("the question has no reference answer; " if len(questions) == 1
                            else f"none of the {len(questions)} questions has a reference "
                                 f"answer; ") + needs)
    missing = len(questions) - len(kept)
    return kept, (f"{missing} question{'s' * (missing != 1)} without a reference answer left "
                  f"out: the {rater} rater needs one." if missing else "")


def _run(ctx, session: Session, questions, limit, left_out: str = "") -> None:
    session.open()
    if questions is None:
        total = limit
        source = rating_questions.typed(_read_question, click.echo)
        stderr.print(f"Rating as {session.rater_id}: type a question, Enter on an empty line "
                     f"to stop.", highlight=False)
    else:
        done = session.done_hashes()
        pending = [q for q in questions if q.hash not in done]
        if not pending:
            click.echo(f"All {len(questions)} questions are already rated by "
                       f"{session.rater_id}; nothing to do.")
            _note(left_out)
            return
        total = min(len(pending), limit or len(pending))
        before = len(questions) - len(pending)
        stderr.print(f"Rating {total} of {len(questions)} questions as {session.rater_id}"
                     + (f" ({before} already rated)." if before else "."), highlight=False)
        source = iter(pending)

    rated: Counter = Counter()
    # An automatic rater waits on no one: its questions' answers come a batch at a time.
    ahead = Ahead(session, pending[:total]) if questions is not None and not session.prefetch \
        else None
    try:
        question = next(source, None)
        while question is not None:
            if limit and sum(rated.values()) >= limit:
                break
            position = sum(rated.values()) + 1
            if ahead is not None:
                ahead.before(question)
            # A file's next question is generated while this one is rated; typed ones are
            # not known ahead.
            upcoming = None if questions is None else next(source, None)
            last = bool(limit) and position >= limit
            outcome = session.rate(question, position, total, None if last else upcoming)
            if outcome is None:                # rated, or being rated, in another session
                _not_mine(session, question, typed=questions is None)
            else:
                rated[outcome.choice] += 1
                counter = f"{position}/{total}" if total else f"{position}"
                click.echo(f"Saved {counter}: {outcome.choice}  {_short(question.text, 56)}")
            question = upcoming if questions is not None else next(source, None)
    except StopRating as stop:
        _summary(rated, session, f"Stopped ({stop or 'quit'}): ", resume=True)
        _note(left_out)
        return
    except KeyboardInterrupt:
        _summary(rated, session, "\nInterrupted: ", resume=True)
        _note(left_out)
        ctx.exit(130)
    _summary(rated, session, "", resume=bool(limit and questions and total < len(pending)))
    _note(left_out)


def _not_mine(session: Session, question, typed: bool) -> None:
    if session.is_done(question):
        if typed:
            click.echo(f"Already rated by {session.rater_id}.")
        return
    message = f"Another session of {session.rater_id} is rating this question; skipped"
    if typed:
        click.echo(message + ".")
    else:
        stderr.print(f"{message}: {_short(question.text, 56)}", highlight=False,
                     soft_wrap=True)


def _read_question() -> str | None:
    try:
        return input("Question (Enter to stop): ")
    except EOFError:
        return None


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _note(line: str) -> None:
    if line:
        stderr.print(line, highlight=False, soft_wrap=True)


def _summary(rated: Counter, session: Session, prefix: str, resume: bool) -> None:
    count = sum(rated.values())
    parts = ", ".join(f"{choice} {n}" for choice, n in sorted(rated.items()))
    stderr.print(f"{prefix}{count} rated this session as {session.rater_id}"
                 + (f" ({parts})" if parts else "") + "; all saved."
                 + (" Run the same command to continue." if resume else ""),
                 highlight=False, soft_wrap=True)
