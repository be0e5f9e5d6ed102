"""`ragloop distill`: train a student model from a teacher model or adapter."""

from __future__ import annotations

from pathlib import Path

import click

from ragloop.core import hookimpl, options_option, pass_workspace, progress_bar, run_reported


@click.command()
@click.option("--teacher", required=True, metavar="MODEL_OR_ADAPTER",
              help="Teacher: a model folder or hub id, or an adapter name or folder.")
@click.option("--student", required=True, metavar="MODEL", help="Student model folder or hub id.")
@click.option("--method", default="logits", show_default=True,
              help="logits (shared tokenizer), sequences, or a plugin's.")
@click.option("--questions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Questions file (the `rate --questions` formats) instead of the logged ones.")
@click.option("--data", type=click.Path(exists=True, path_type=Path),
              help="Use the prompts of this `prefs export` file (no retrieval).")
@click.option("--max-steps", type=click.IntRange(1), help="Optimizer steps (default: 1 epoch).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), help="Learning rate.")
@click.option("--batch-size", type=click.IntRange(1), default=2, show_default=True)
@click.option("--full", is_flag=True, help="Train every student weight instead of LoRA.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=128, show_default=True,
              help="Longest teacher answer.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--name", help="Name of the result in adapters/ (default: METHOD-DATE-TIME).")
@options_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_workspace
def distill(ws, teacher, student, method, questions, data, max_steps, lr, batch_size, full,
            max_new_tokens, seed, name, options, as_json):
    """Distill a teacher into a student.

    The teacher answers the workspace's questions with their retrieved passages (or
    --questions, or the prompts of --data); the student learns its token distributions
    (logits) or its answers (sequences). The result is registered in adapters/ with the
    teacher, questions and run id as lineage.
    """
    from ragloop.core import TrainSettings
    from ragloop.plugins.distillation.common import (
        answer_prompts,
        prepare_distillation,
        run_distillation,
    )
    settings = TrainSettings(max_steps=max_steps, learning_rate=lr, batch_size=batch_size,
                             full=full, seed=seed)
    job = prepare_distillation(ws, teacher, student, method=method, questions=questions,
                               data=data, settings=settings, name=name, options=options,
                               max_new_tokens=max_new_tokens)
    # Progress on stderr even with --json (stdout stays the JSON): answering takes minutes.
    with progress_bar() as bar:
        task = bar.add_task(f"Teacher answering {len(job.prompts)} prompts",
                            total=len(job.prompts))
        answer_prompts(job, progress=lambda n: bar.advance(task, n))
    done = run_reported(f"distill {method}",
                        lambda bar: run_distillation(ws, job, listeners=[bar]), as_json)
    if done is None:
        return
    result, seconds, loss = done
    click.echo(f"Distilled {teacher} into {student} as {result.adapter!r} in "
               f"{seconds:.0f}s ({loss}).")
    click.echo(f"Run folder: {result.run_dir}")


@hookimpl
def register_commands(cli):
    cli.add_command(distill)
