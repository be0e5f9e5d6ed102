"""The report of an evaluation run: metrics.json (everything, per-item details included),
report.md (a table per evaluator, the settings, the adapter's lineage) and report.png (one
panel per evaluator that draws one), written into a temp folder and renamed into place.
Also the interval evaluators report a paired difference with (`paired_bootstrap`)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, is_dataclass
from pathlib import Path

from ragloop.core.pipeline.adapters import write_folder
from ragloop.core.pipeline.training_runs import versions
from ragloop.core.workspace import utcnow

LINEAGE_KEYS = ("source", "kind", "rows", "train_rows", "eval_rows")
BOOTSTRAP_SAMPLES = 10_000


def paired_bootstrap(a, b, confidence: float = 0.95, samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = 0) -> dict:
    """mean(a) - mean(b) over the same items, with a percentile bootstrap interval:
    {"difference", "low", "high"}. The items (pairs a[i], b[i]) are resampled together, so
    what varies from item to item (an easy question, a hard one) cancels out of the
    difference. Deterministic for a given seed; pure Python, so no numerical library loads."""
    if len(a) != len(b):
        raise ValueError(f"paired values differ in length: {len(a)} and {len(b)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    n = len(a)
    if n == 0:
        raise ValueError("no paired values")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(samples))
    tail = (1 - confidence) / 2

    def quantile(q: float) -> float:       # linear between order statistics, as numpy's
        position = q * (samples - 1)
        below = int(position)
        above = min(below + 1, samples - 1)
        return means[below] + (means[above] - means[below]) * (position - below)

    return {"difference": sum(diffs) / n, "low": quantile(tail), "high": quantile(1 - tail)}


def adapter_summary(meta: dict | None) -> dict | None:
    if not meta:
        return None
    lineage = meta.get("lineage") or {}
    out = {k: meta.get(k) for k in ("name", "path", "kind", "method", "base_model_id",
                                    "run_id", "run_dir", "dataset_hash", "created_at")}
    out["lineage"] = {k: lineage.get(k) for k in LINEAGE_KEYS if k in lineage}
    out["lineage"]["comparison_ids"] = lineage.get("comparison_ids") or []
    return out


def build_record(context, results: dict, seconds: float) -> dict:
    settings = asdict(context.settings)
    settings["generator_options"] = list(context.generator_options)
    settings["evaluators"] = list(context.evaluators)
    evaluators = {}
    for name, evaluator in context.evaluators.items():
        config = evaluator.config
        evaluators[name] = {"options": asdict(config) if is_dataclass(config) else {},
                            **results[name]}
    return {"id": context.id, "created_at": utcnow(), "seconds": seconds,
            "adapter": adapter_summary(context.adapter), "base_model_id": context.base_model_id,
            "settings": settings, "evaluators": evaluators, "versions": versions()}


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(f"`{x}`" for x in v) or "–"
    return "–" if v is None else str(v)


def summary_line(name: str, evaluator, result: dict) -> str:
    if "skipped" in result:
        return f"{name}: skipped: {result['skipped']}"
    custom = getattr(evaluator, "summary", None)
    if custom is not None:
        return f"{name}: {custom(result)}"
    return f"{name}: " + "  ".join(f"{k} {_value(v)}" for k, v in result["metrics"].items())


def used_options(options: dict, result: dict) -> dict:
    """The options as the evaluator applied them. An option given as 0 = "choose for me"
    (reward's beta: the adapter's own training beta) is recorded as given, and the value
    chosen is in the metrics: printing the given 0.0 beside the 0.1 used read as a
    contradiction, so the metric's value wins where both name the same key."""
    metrics = result.get("metrics") or {}
    return {k: metrics.get(k, v) if isinstance(v, (int, float)) else v
            for k, v in options.items()}


def markdown(context, record: dict, results: dict, png: bool) -> str:
    lines = [f"# Evaluation {record['id']}", ""]
    adapter = record["adapter"]
    settings = record["settings"]
    if settings.get("baseline_prompt"):
        on = f" with adapter `{adapter['name']}`" if adapter else ""
        lines += [f"Prompt `{settings['prompt']}` against prompt `{settings['baseline_prompt']}`"
                  f" on `{record['base_model_id']}`{on}. In the tables, \"base\" is the "
                  f"baseline prompt's answers and \"adapter\" the other prompt's.", ""]
    elif adapter:
        lines += [f"Adapter `{adapter['name']}` ({adapter.get('method') or adapter.get('kind')})"
                  f" against its base model `{record['base_model_id']}`.", ""]
    lines += [f"{record['created_at']}, {record['seconds']} s.", ""]
    for name, result in results.items():
        lines += [f"## {name}", ""]
        if "skipped" in result:
            lines += [f"Skipped: {result['skipped']}.", ""]
        else:
            lines += ["| metric | value |", "| --- | --- |"]
            lines += [f"| {k} | {_value(v)} |" for k, v in result["metrics"].items()]
            lines.append("")
        lines += [f"- {note}" for note in result.get("notes", [])]
        options = used_options(record["evaluators"][name]["options"], result)
        if options:
            lines.append("- options: " + ", ".join(f"`{k}={v}`" for k, v in options.items()))
        lines.append("")
    if png:
        lines += ["![metrics](report.png)", ""]
    lines += ["## Settings", "", "| setting | value |", "| --- | --- |"]
    for key, value in record["settings"].items():
        if key != "options":
            lines.append(f"| {key} | {_value(value)} |")
    lines.append("")
    if adapter:
        lineage = adapter["lineage"]
        lines += ["## Adapter lineage", "",
                  f"- folder: `{adapter['path']}`",
                  f"- method: {adapter.get('method')}, "
                  f"base model: `{adapter.get('base_model_id')}`",
                  f"- training run: {adapter.get('run_id')}"
                  + (f" (`{adapter['run_dir']}`)" if adapter.get("run_dir") else ""),
                  f"- dataset sha256: `{adapter.get('dataset_hash')}`"]
        lines += [f"- {k.replace('_', ' ')}: {lineage[k]}" for k in LINEAGE_KEYS if k in lineage]
        lines += [f"- comparisons trained on: {len(lineage['comparison_ids'])} "
                  f"(their ids are in metrics.json)", ""]
    return "\n".join(lines)


def plot(context, results: dict, path: Path) -> bool:
    """One panel per evaluator with a `plot` method and a result; False when none drew."""
    panels = [(name, e) for name, e in context.evaluators.items()
              if getattr(e, "plot", None) and "skipped" not in results[name]]
    if not panels:
        return False
    import matplotlib
    matplotlib.use("Agg")               # files only: no display on servers
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (name, evaluator) in zip(axes[0], panels):
        evaluator.plot(results[name], ax)
        ax.set_title(ax.get_title() or name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(context, record: dict, results: dict) -> Path:
    def write(tmp: Path) -> None:
        drew = plot(context, results, tmp / "report.png")
        record["files"] = ["report.md", "metrics.json"] + (["report.png"] if drew else [])
        (tmp / "metrics.json").write_text(json.dumps(record, indent=2, default=str),
                                          encoding="utf-8")
        (tmp / "report.md").write_text(markdown(context, record, results, drew),
                                       encoding="utf-8")

    return write_folder(context.out, write, "writing the evaluation report", replace=True)
