"""How often the judge agrees with the truth: on pairs of real model answers where exactly one
contains the reference answer (normalized containment, the correctness evaluator's), how
often does the judge pick that one? Ties count as misses; the tie rate is reported too, with
a 95% bootstrap interval on each agreement (resampled by question, as pairs of one question
are not independent). The judge as it was before issue 13 (read from git) and the judge now
are scored on the same pairs in the same run.

Two sets of pairs, so the judge is not tuned to one corpus:

- `examples`: the packaged SmolLM2 answers examples/questions.jsonl (each carries a reference
  answer) from the passages ragloop's own hybrid search retrieves from examples/corpus,
  several sampled answers per question (temperature 0.8); every two answers of a question
  where exactly one contains the reference make a pair.
- `faq`: real text nobody here wrote, the FAQ files under /usr/share/doc, cut into entries by
  bench/retrieval_corpora.py. Question: an entry's question; reference: the sentence of its
  answer sharing most words with the question; candidates: the model's greedy answer given
  the right entry and its answer given a wrong entry of the same FAQ. The judge sees both
  entries as the passages (in a seeded order, each answer's citations renumbered to match).
- `loop` (with `--workspace HOME --questions FILE`): the answers a workspace already holds,
  say a `bench/bench_loop.py --candidates best-of-16` workspace: every answer of the base
  model to each question of FILE (JSONL with `question` and `answer`), with the passages it
  was given. Nothing is generated.

Answers are cached under --cache (default /tmp/ragloop-bench-judge), keyed by model and
settings, so a rerun only judges. Generation batches the samples of one prompt.

    nice -n 10 python bench/bench_judge.py [--limit 60] [--faq 40] [--samples 4]
                                           [--workspace HOME --questions FILE]
                                           [--generator openvino] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
import sys
import types
from itertools import combinations
from pathlib import Path

from _common import CORPUS, QUESTIONS, REPO, finish, say
from retrieval_corpora import build_corpora

from ragloop.core.pipeline.prompt import make_messages
from ragloop.plugins.evaluators.correctness import contains
from ragloop.plugins.raters import judge as new_judge
from ragloop.core.components import Comparison

OLD_JUDGE = "75077db"          # the last commit before the judge of issue 13
TEMPERATURE = 0.8
FAQ_PASSAGE_CHARS = 1200        # about one chunk of the default chunker
SENTENCE = re.compile(r"(?<=[.!?])\s+")


# ---- answers -----------------------------------------------------------------------------

class Model:
    """The packaged SmolLM2, loaded as `ask` loads it, sampled in batches; with --generator,
    through that generator plugin (the same weights on another runtime)."""

    def __init__(self, ws, generator: str = "transformers"):
        from ragloop.core.pipeline.ask import load_generator
        self.generator = generator
        self.gen = load_generator(ws, generator, ())
        self.id = self.gen.model_id

    def answers(self, messages, n: int, seed: int, max_new_tokens: int) -> list[dict]:
        if self.generator != "transformers":
            return self._from_plugin(messages, n, seed, max_new_tokens)
        import torch
        tok, model = self.gen.tokenizer, self.gen.model
        ids = torch.tensor([tok(self.gen.render(messages), add_special_tokens=False)
                            ["input_ids"]])
        torch.manual_seed(seed)
        end = tok.convert_tokens_to_ids("<|im_end|>")
        common = dict(attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                      eos_token_id=[end, tok.eos_token_id], pad_token_id=tok.eos_token_id)
        rows = []
        with torch.inference_mode():
            # The greedy answer (what eval and the demo's base model give) and n - 1 samples.
            rows += model.generate(ids, do_sample=False, **common)[:, ids.shape[1]:].tolist()
            if n > 1:
                rows += model.generate(ids, do_sample=True, temperature=TEMPERATURE, top_p=1.0,
                                       top_k=0, num_return_sequences=n - 1,
                                       **common)[:, ids.shape[1]:].tolist()
        result = []
        for row in rows:
            done = any(t in (end, tok.eos_token_id) for t in row)
            text = tok.decode(row, skip_special_tokens=True).strip()
            result.append({"text": text, "cut_off": not done})
        return result

    def _from_plugin(self, messages, n: int, seed: int, max_new_tokens: int) -> list[dict]:
        """The greedy answer and n - 1 samples through `generate_many` (the plugin's own
        sampling: top-p 0.95, where the transformers path above draws from all tokens)."""
        texts = self.gen.generate_many([messages], max_new_tokens=max_new_tokens)
        records = list(self.gen.last_generations)
        if n > 1:
            texts += self.gen.generate_many([messages] * (n - 1), max_new_tokens=max_new_tokens,
                                            temperature=TEMPERATURE, seed=seed)
            records += self.gen.last_generations
        return [{"text": text.strip(), "cut_off": record["stop"] == "length"}
                for text, record in zip(texts, records)]


class Cache:
    """One JSON line per answered prompt, appended as it is made, so an interrupted run
    resumes where it stopped."""

    def __init__(self, folder: Path, key: dict):
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        self.path = folder / f"answers-{key['set']}-{digest}.jsonl"
        self.rows = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                self.rows[row["id"]] = row

    def get(self, id_: str, make, cached_only: bool = False) -> dict | None:
        if id_ not in self.rows:
            if cached_only:
                return None
            row = {"id": id_, **make()}
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            self.rows[id_] = row
        return self.rows[id_]


def generated_by(args) -> dict:
    """The generator in a cache key; absent for transformers, whose caches came first."""
    return {} if args.generator == "transformers" else {"generator": args.generator}


def example_items(args, model_holder) -> list[dict]:
    from ragloop.core.pipeline.ingest import Indexer, discover
    from ragloop.core.pipeline.search import Searcher
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    rows = rows[:args.limit]
    cache = Cache(args.cache, {"set": "examples", "n": args.samples, "tokens": args.max_new_tokens,
                               "t": TEMPERATURE, "k": args.k, "v": 2, **generated_by(args)})
    searcher = None
    items = []
    for i, row in enumerate(rows):
        def make():
            nonlocal searcher
            if searcher is None:
                ws = model_holder.workspace()
                say("indexing examples/corpus")
                indexer = Indexer(ws)
                known = indexer.known()
                for path in discover([CORPUS]):
                    indexer.add_file(path, known)
                indexer.flush()
                searcher = Searcher(ws)
            hits = searcher.search(row["question"], k=args.k)
            say(f"examples {i + 1}/{len(rows)}: {row['question'][:60]}")
            answers = model_holder.model().answers(make_messages(row["question"], hits),
                                                   args.samples, i, args.max_new_tokens)
            return {"passages": [h.text for h in hits], "answers": answers}
        got = cache.get(row["question"], make, args.cached)
        if got is None:
            continue
        items.append({"question": row["question"], "reference": row["answer"], **got})
    return items


def key_sentence(passage: str, question: str) -> str:
    asked = set(new_judge.content_words(question))
    sentences = [s.strip() for s in SENTENCE.split(" ".join(passage.split())) if s.strip()]
    return max(sentences, key=lambda s: len(asked & set(new_judge.content_words(s))))


def renumber(answer: str, number: int) -> str:
    return re.sub(r"\[1\]", f"[{number}]", answer)


def faq_items(args, model_holder) -> list[dict]:
    corpus = build_corpora(args.cache / "corpora", ["faq"], {"faq": args.faq}, seed=0,
                           progress=say)[0]
    docs = sorted(p.name for p in corpus.folder.glob("*.md"))

    def passage(name: str) -> str:
        text = (corpus.folder / name).read_text().split("\n", 1)[-1].strip()
        return text[:FAQ_PASSAGE_CHARS]

    cache = Cache(args.cache, {"set": "faq", "n": args.faq, "tokens": args.max_new_tokens,
                               "chars": FAQ_PASSAGE_CHARS, "v": 1, **generated_by(args)})
    items = []
    for i, query in enumerate(corpus.queries):
        right = query.relevant[0]
        rng = random.Random(f"faq:{query.qid}")
        family = right.split("-faq-")[0]
        others = [d for d in docs if d != right and d.split("-faq-")[0] == family] or \
            [d for d in docs if d != right]
        wrong = rng.choice(others)
        right_first = rng.random() < 0.5

        def make():
            say(f"faq {i + 1}/{len(corpus.queries)}: {query.text[:60]}")
            m = model_holder.model()
            return {"right": m.answers(make_messages(query.text, [_Hit(passage(right))]), 1, i,
                                       args.max_new_tokens)[0],
                    "wrong": m.answers(make_messages(query.text, [_Hit(passage(wrong))]), 1, i,
                                       args.max_new_tokens)[0]}
        got = cache.get(query.qid, make, args.cached)
        if got is None:
            continue
        passages = [passage(right), passage(wrong)]
        numbers = (1, 2)
        if not right_first:
            passages.reverse()
            numbers = (2, 1)
        answers = [dict(got["right"], text=renumber(got["right"]["text"], numbers[0])),
                   dict(got["wrong"], text=renumber(got["wrong"]["text"], numbers[1]))]
        items.append({"question": query.text, "reference": key_sentence(passage(right),
                                                                         query.text),
                      "passages": passages, "answers": answers})
    return items


def workspace_items(home: Path, questions: Path) -> list[dict]:
    from ragloop.core.workspace import Workspace
    references = {}
    for line in questions.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get("answer"):
                references[row["question"]] = row["answer"]
    db = Workspace(home).db
    chunks = {}
    items: dict[str, dict] = {}
    rows = db.execute("SELECT q.text, c.text, c.chunk_ids_json, c.params_json FROM candidates c "
                      "JOIN questions q ON q.id = c.question_id WHERE c.adapter IS NULL "
                      "ORDER BY c.id").fetchall()
    for question, text, chunk_ids, params in rows:
        if question not in references:
            continue
        ids = json.loads(chunk_ids)
        for i in ids:
            if i not in chunks:
                chunks[i] = db.execute("SELECT text FROM chunks WHERE id = ?", [i]).fetchone()[0]
        passages = [chunks[i] for i in ids]
        item = items.setdefault(question, {"question": question, "reference": references[question],
                                           "passages": passages, "answers": []})
        if passages != item["passages"]:
            continue        # answered from other passages (another k or index): not comparable
        stop = json.loads(params or "{}").get("stop")
        item["answers"].append({"text": text, "cut_off": stop == "length"})
    say(f"loop: {sum(len(i['answers']) for i in items.values())} answers to {len(items)} "
        f"questions from {home}")
    return list(items.values())


class _Hit:
    def __init__(self, text: str):
        self.text = text


class ModelHolder:
    """Loads the workspace and the model only when some answer is not cached."""

    def __init__(self, folder: Path, generator: str = "transformers"):
        self.folder = folder
        self.generator = generator
        self._ws = self._model = None

    def workspace(self):
        # Kept under the cache folder: the model is converted and the corpus indexed once.
        if self._ws is None:
            from ragloop.core.workspace import Workspace
            self._ws = Workspace(self.folder / "workspace")
        return self._ws

    def model(self) -> Model:
        if self._model is None:
            say("loading the model")
            self._model = Model(self.workspace(), self.generator)
        return self._model


# ---- judging -----------------------------------------------------------------------------

def load_old_judge():
    source = subprocess.run(["git", "show", f"{OLD_JUDGE}:plugins/raters/judge.py"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("old_judge")
    sys.modules["old_judge"] = module      # dataclasses look their module up
    exec(compile(source, "old_judge.py", "exec"), module.__dict__)
    return module.JudgeRater()


def pairs(items: list[dict]) -> list[tuple[int, Comparison, str]]:
    """(question number, comparison, the side that contains the reference) for every two
    answers of a question where exactly one contains it; which one is shown first is seeded."""
    result = []
    for q, item in enumerate(items):
        answers = item["answers"]
        for x, y in combinations(range(len(answers)), 2):
            hit = [contains(answers[i]["text"], item["reference"]) for i in (x, y)]
            if hit[0] == hit[1]:
                continue
            if random.Random(f"{q}:{x}:{y}").random() < 0.5:
                x, y, hit = y, x, hit[::-1]
            a, b = answers[x], answers[y]
            result.append((q, Comparison(item["question"], item["passages"], a["text"], b["text"],
                                         cut_off=(a["cut_off"], b["cut_off"])),
                           "a" if hit[0] else "b"))
    return result


def bootstrap(per_question: dict[int, list[float]], samples: int = 2000, seed: int = 0):
    keys = sorted(per_question)
    rng = random.Random(seed)
    means = []
    for _ in range(samples):
        picked = [v for k in (rng.choice(keys) for _ in keys) for v in per_question[k]]
        means.append(sum(picked) / len(picked))
    means.sort()
    return means[int(0.025 * samples)], means[int(0.975 * samples) - 1]


def agreement(judge, cases) -> dict:
    hits: dict[int, list[float]] = {}
    ties = wrong = 0
    for q, comparison, truth in cases:
        verdict = judge.compare(comparison)
        choice = getattr(verdict, "choice", verdict)
        hits.setdefault(q, []).append(float(choice == truth))
        ties += choice in ("tie", "both-bad")
        wrong += choice in ("a", "b") and choice != truth
    n = len(cases)
    if not n:
        return {"pairs": 0}
    low, high = bootstrap(hits)
    return {"pairs": n, "questions": len(hits),
            "agreement": round(sum(sum(v) for v in hits.values()) / n, 3),
            "interval": [round(low, 3), round(high, 3)],
            "tie_rate": round(ties / n, 3), "wrong_rate": round(wrong / n, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=60, help="examples questions to use (0: none)")
    parser.add_argument("--faq", type=int, default=40, help="FAQ questions to use (0: none)")
    parser.add_argument("--samples", type=int, default=4, help="sampled answers per question")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("-k", type=int, default=4, help="passages retrieved per question")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ragloop-bench-judge"))
    parser.add_argument("--cached", action="store_true",
                        help="judge only the questions whose answers are cached; generate none")
    parser.add_argument("--new-options", nargs="*", default=[], metavar="KEY=VALUE",
                        help="options of the new judge (as -o rater.KEY=VALUE)")
    parser.add_argument("--workspace", type=Path,
                        help="also judge the base model's answers this workspace holds")
    parser.add_argument("--questions", type=Path,
                        help="with --workspace: JSONL questions with reference answers")
    parser.add_argument("--generator", default="transformers",
                        help="generator plugin that makes the answers (openvino: ~3x faster)")
    parser.add_argument("--json", type=Path, help="save the numbers here")
    args = parser.parse_args()
    if bool(args.workspace) != bool(args.questions):
        parser.error("--workspace and --questions go together")
    holder = ModelHolder(args.cache, args.generator)
    sets = {}
    if args.limit:
        sets["examples"] = example_items(args, holder)
    if args.faq:
        sets["faq"] = faq_items(args, holder)
    if args.workspace:
        sets["loop"] = workspace_items(args.workspace, args.questions)
    from ragloop.core.config import build_config
    judges = {"old": load_old_judge(),
              "new": new_judge.JudgeRater(build_config(new_judge.JudgeRater.Config,
                                                       args.new_options, "judge"))}
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "sets": {}}
    for name, items in sets.items():
        cases = pairs(items)
        contained = [contains(a["text"], it["reference"]) for it in items for a in it["answers"]]
        entry = {"questions": len(items), "answers": len(contained),
                 "contain_reference": round(sum(contained) / max(1, len(contained)), 3)}
        for label, judge in judges.items():
            say(f"judging {len(cases)} {name} pairs with the {label} judge")
            entry[label] = agreement(judge, cases)
        report["sets"][name] = entry
    all_cases = [(f"{n}:{q}", c, t) for n, items in sets.items() for q, c, t in pairs(items)]
    report["all"] = {label: agreement(judge, all_cases) for label, judge in judges.items()}
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=1))
    finish(report, args.json)


if __name__ == "__main__":
    main()
