"""Distillation: a student model learns from a teacher. The API behind `ragloop distill`.

    job = prepare_distillation(ws, teacher, student, method="logits", questions=None,
                               data=None, settings=TrainSettings(), name=None, options=(),
                               max_new_tokens=128)
    answer_prompts(job, progress=None)                    # optional: the teacher answers
    result = run_distillation(ws, job, listeners=())      # -> TrainResult

The teacher is a model (folder, hub id or the generator's packaged model) or an adapter of
the workspace (name or folder); an adapter runs on the base model it records, merged.
The rows are prompts with the teacher's answers: the workspace's logged questions (or
`questions`, a file in the `rate --questions` formats) with their retrieved passages, as
`ask` builds them, or the prompts of a `data` file in the `prefs export` formats; the
teacher answers them (`answer_prompts`) before the distiller runs. A distiller plugin
(`register_distillers`) gets the job with its rows and trains the student through the
training core with `train_student`, so a distilled student is a run with a run folder and
an adapter (or, with settings.full, a model) registered with its lineage.

The teacher's weights load once per run (`Teacher.load`): building the prompts loads them
through the generator, which the answering then uses; a training method that needs the
teacher too (`distill-logits`) gets that same model in this process (`train_student(...,
keep_teacher=True)`, through plugins/hf/kept.py). Otherwise the teacher is let go before
the student trains.
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
from ragloop.plugins.hf.kept import keep
from ragloop.plugins.hf.loader import load_causal_lm

DEFAULT_DISTILLER = "logits"


@dataclass
class Teacher:
    spec: str                       # as given
    model: str                      # checkpoint folder or hub id
    adapter: str | None = None      # LoRA adapter folder on top of `model`

    def __post_init__(self):
        self._loaded = None         # (model, tokenizer) once loaded; not a field: never copied

    def lineage(self) -> dict:
        return {"teacher": self.spec, "teacher_model": self.model, "teacher_adapter": self.adapter}

    def load(self, loaded=None):
        """(model in eval mode, tokenizer), loaded the first time only; a LoRA teacher is
        merged into its base. `loaded`: the teacher's model already loaded (by the generator
        that built the prompts), taken instead of loading the weights again."""
        if self._loaded is None:
            with _library_noise_hidden():
                from transformers import AutoTokenizer
                tokenizer = AutoTokenizer.from_pretrained(self.adapter or self.model)
                if tokenizer.pad_token is None:
                    tokenizer.pad_token = tokenizer.eos_token
                if loaded is None:
                    loaded = load_causal_lm(self.model, adapter=self.adapter, merge=True)
                elif hasattr(loaded, "merge_and_unload"):        # the generator's PeftModel
                    loaded = loaded.merge_and_unload()
            self._loaded = loaded.eval(), tokenizer
        return self._loaded

    def unload(self) -> None:
        """Let the loaded weights go (the memory is the student's next)."""
        self._loaded = None


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
    from ragloop.core import DEFAULT_GENERATOR, Searcher, load_generator, prepare, read_questions
    found = read_questions(ws, questions)
    if not found:
        raise RagloopError("no questions to distill on: ask some with `ragloop ask`, or give "
                           "--questions FILE or --data FILE")
    # On the CPU in float32, where and how the teacher answers: the prompts need the model
    # loaded (its context length), and the answers then use these same weights, merged with
    # the adapter, so they stay plain (packed weights cannot be merged into).
    generator = load_generator(ws, DEFAULT_GENERATOR, [f"model={teacher.model}", "device=cpu",
                                                       "dtype=float32", "packed=false"],
                               adapter=teacher.adapter)
    searcher = Searcher(ws)
    prompts = [{"prompt": prepare(ws, q.text, generator, searcher=searcher).prompt.text,
                "question": q.text} for q in found]
    teacher.load(getattr(generator, "model", None))
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
    model, tokenizer = job.teacher.load()
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


def train_student(ws, job: DistillJob, training_method: str, options=(), listeners=(),
                  backend: str = "local", keep_teacher: bool = False):
    """Train the student on job.rows with a training method; the adapter records where the
    teacher's knowledge came from. `keep_teacher`: the method uses the teacher too, and takes
    the loaded one (in this process) instead of loading it again; else it is let go first."""
    with tempfile.TemporaryDirectory(prefix="ragloop-distill-") as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in job.rows),
                        encoding="utf-8")
        tjob = prepare_training(ws, method=training_method, backend=backend,
                                options=(*options, *job.options), settings=job.settings,
                                data=path, name=job.name, model=job.student)
    tjob.data.source = f"distill:{job.method}:{job.source}"
    tjob.notes = [*job.notes, *tjob.notes]
    if keep_teacher:
        with keep(job.teacher.model, job.teacher.adapter, job.teacher.load()[0]):
            result = run_training(ws, tjob, listeners)
    else:
        job.teacher.unload()
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
    try:
        return distiller.distill(job, listeners)
    finally:
        job.teacher.unload()
