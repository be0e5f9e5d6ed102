"""Distillation: a student model learns from a teacher. The API behind `ragloop distill`.

    job = prepare_distillation(ws, teacher, student, method="logits", questions=None,
                               data=None, settings=TrainSettings(), name=None, options=(),
                               max_new_tokens=128)
    answer_prompts(job, progress=None)                    # optional: the teacher answers
    result = run_distillation(ws, job, listeners=())      # -> TrainResult

The teacher is a model (folder, hub id or the generator's packaged model) or an adapter of
the workspace (name or folder); an adapter runs on the base model it records.
The rows are prompts with the teacher's answers: the workspace's logged questions (or
`questions`, a file in the `rate --questions` formats) with their retrieved passages, as
`ask` builds them, or the prompts of a `data` file in the `prefs export` formats; the
teacher answers them (`answer_prompts`) before the distiller runs. A distiller plugin (`register_distillers`) gets the job with its rows and trains the student
through the training core with `train_student`, so a distilled student is a run with a run
folder and an adapter (or, with settings.full, a model) registered with its lineage.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ragloop.core import (
    METADATA,
    RagloopError,
    TrainSettings,
    get_adapter,
    prepare_training,
    quiet_library_logs,
    registry,
    run_training,
    select,
)

DEFAULT_DISTILLER = "logits"


@dataclass
class Teacher:
    spec: str                       # as given
    model: str                      # checkpoint folder or hub id
    adapter: str | None = None      # LoRA adapter folder on top of `model`

    def lineage(self) -> dict:
        return {"teacher": self.spec, "teacher_model": self.model, "teacher_adapter": self.adapter}


@dataclass
class DistillJob:
    method: str
    teacher: Teacher
    student: str
    settings: TrainSettings
    name: str | None
    options: tuple
    prompts: list[dict]             # {"prompt", "question"?}: what the teacher answers
    source: str                     # "workspace questions", a questions file or a data file
    max_new_tokens: int = 128
    rows: list[dict] = field(default_factory=list)     # prompts with the teacher's answers
    notes: list[str] = field(default_factory=list)
    student_model: str = ""         # the student's checkpoint folder or hub id


def checkpoint(ws, model: str) -> str:
    """The folder or hub id the generator loads `model` from: the packaged model's name
    becomes its converted folder, a folder its absolute path."""
    from ragloop.core import DEFAULT_GENERATOR, load_generator
    generator = load_generator(ws, DEFAULT_GENERATOR, [f"model={model}"])
    checkpoint = generator.checkpoint()       # None: the generator has no weights to load
    if checkpoint is None:
        raise RagloopError(f"generator {DEFAULT_GENERATOR!r} cannot give a checkpoint to load")
    return checkpoint


def resolve_teacher(ws, spec: str) -> Teacher:
    """An adapter (by name or folder, on its recorded base), or else a model."""
    folder = Path(spec).expanduser()
    if not folder.is_dir() and (Path(ws.adapters_dir) / spec).is_dir():
        meta = get_adapter(ws, spec)
    elif folder.is_dir() and (folder / METADATA).is_file():
        meta = json.loads((folder / METADATA).read_text(encoding="utf-8"))
        meta["path"] = str(folder.resolve())
    else:
        return Teacher(spec, checkpoint(ws, spec))
    if meta.get("kind") == "full":
        return Teacher(spec, meta["path"])
    return Teacher(spec, meta["base_model"], meta["path"])


def _prompts(ws, teacher: Teacher, questions, data) -> tuple[list[dict], str]:
    if data is not None:
        rows = select(ws, None, Path(data)).rows
        unique = list(dict.fromkeys(r["prompt"] for r in rows))
        return [{"prompt": p} for p in unique], str(data)
    from ragloop.core import DEFAULT_GENERATOR, Searcher, load_generator, prepare
    from ragloop.core.pipeline import rating_questions
    found = rating_questions.from_file(questions) if questions else rating_questions.from_logs(ws)
    if not found:
        raise RagloopError("no questions to distill on: ask some with `ragloop ask`, or give "
                           "--questions FILE or --data FILE")
    generator = load_generator(ws, DEFAULT_GENERATOR, [f"model={teacher.model}"],
                               adapter=teacher.adapter)
    searcher = Searcher(ws)
    prompts = [{"prompt": prepare(ws, q.text, generator, searcher=searcher).prompt.text,
                "question": q.text} for q in found]
    return prompts, str(questions) if questions else "workspace questions"


def prepare_distillation(ws, teacher: str, student: str, *, method: str = DEFAULT_DISTILLER,
                         questions=None, data=None, settings: TrainSettings | None = None,
                         name: str | None = None, options=(), max_new_tokens: int = 128
                         ) -> DistillJob:
    """Check everything and build the prompts; writes nothing."""
    cls = registry.get("distiller", method)
    if questions is not None and data is not None:
        raise RagloopError("give --questions or --data, not both")
    if max_new_tokens < 1:
        raise RagloopError(f"--max-new-tokens must be at least 1, not {max_new_tokens}")
    job = DistillJob(method, resolve_teacher(ws, teacher), student, settings or TrainSettings(),
                     name, tuple(options), [], "", max_new_tokens,
                     student_model=checkpoint(ws, student))
    check = getattr(cls(workspace=ws), "check", None)
    if check is not None:
        check(job)                  # e.g. logits: the tokenizers must match
    job.prompts, job.source = _prompts(ws, job.teacher, questions, data)
    return job


def answer_prompts(job: DistillJob, progress=None) -> list[dict]:
    """Fill job.rows with the teacher's answers (once); `progress(n)` is told of each."""
    if not job.rows:
        job.rows = teacher_answers(job, progress)
    return job.rows


def teacher_answers(job: DistillJob, progress=None) -> list[dict]:
    """The teacher's greedy answers to the job's prompts, as sft rows."""
    import torch
    model, tokenizer = load_teacher(job.teacher)
    rows = []
    for item in job.prompts:
        ids = tokenizer(item["prompt"], add_special_tokens=False, return_tensors="pt")
        with torch.no_grad(), _library_noise_hidden():
            out = model.generate(**ids, max_new_tokens=job.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        rows.append({**item, "completion": text.strip() or tokenizer.eos_token})
        if progress:
            progress(1)
    return rows


@contextmanager
def _library_noise_hidden():
    """transformers' and peft's bars, logs and deprecation notes speak to library authors
    about each other's APIs; stderr is for ragloop's own progress lines."""
    quiet_library_logs("transformers", "peft", "huggingface_hub")
    import transformers
    transformers.logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def load_teacher(teacher: Teacher):
    """(model in eval mode, tokenizer); a LoRA teacher is merged into its base."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    with _library_noise_hidden():
        tokenizer = AutoTokenizer.from_pretrained(teacher.adapter or teacher.model)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(teacher.model, dtype=torch.float32)
        if teacher.adapter:
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, teacher.adapter).merge_and_unload()
    return model.eval(), tokenizer


def train_student(ws, job: DistillJob, training_method: str, options=(), listeners=(),
                  backend: str = "local"):
    """Train the student on job.rows with a training method; the adapter records where the
    teacher's knowledge came from."""
    with tempfile.TemporaryDirectory(prefix="ragloop-distill-") as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in job.rows),
                        encoding="utf-8")
        tjob = prepare_training(ws, method=training_method, backend=backend,
                                options=(*options, *job.options), settings=job.settings,
                                data=path, name=job.name, model=job.student)
    tjob.data.source = f"distill:{job.method}:{job.source}"
    tjob.notes = [*job.notes, *tjob.notes]
    result = run_training(ws, tjob, listeners)
    lineage = {**job.teacher.lineage(), "method": job.method, "questions": job.source,
               "prompts": len(job.prompts), "run_id": result.run_id}
    meta_path = result.adapter_dir / METADATA
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["distillation"] = lineage
    meta_path.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return result


def run_distillation(ws, job: DistillJob, listeners=()):
    """Have the teacher answer (unless answer_prompts did) and the distiller train the
    student; returns the TrainResult."""
    distiller = registry.get("distiller", job.method)(workspace=ws)
    answer_prompts(job)
    return distiller.distill(job, listeners)
