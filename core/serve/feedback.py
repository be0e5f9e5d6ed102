"""Traces and feedback of `ragloop serve`, stored in the tables `ragloop rate` writes, with the
same provenance, so that `prefs export` and `train` use them unchanged.

A served answer is a question row (origin "serve") and a candidate row (the exact prompt the
model saw, its messages, passages, model, adapter and sampling), plus a `serve_traces` row
whose id is the trace id the client gets. Feedback against a trace becomes:

- thumbs: a score of the served answer, up 5 and down 1 (as `prefs import` stores KTO
  labels), so it becomes a KTO row; a 1-5 score is stored as it is;
- a correction: a second candidate (the correction, same prompt; generator "human") and a
  comparison in which it won over the served answer: a DPO pair, correction chosen;
- passages: passage judgments of the numbered sources; a comment: a comment row when the
  feedback made a comparison, and in `serve_feedback` always;
- a compare verdict: a comparison of the two answers, as `rate` stores one (a/b as shown);
  under `--ab` the two answers are two adapters' (each named on its trace), so the verdict
  is also a live head-to-head between them (core/pipeline/prefs_stats.py counts it).

Rows carry rater "serve" and the rater id of the token that sent them. Every request is also
one `serve_feedback` row (the request as given), which is what the load test counts.
Everything is checked before anything is written; the caller runs `apply` in a transaction.
"""

from __future__ import annotations

import json

from ragloop.core.ids import new_id
from ragloop.core.pipeline.rating import MAX_COMMENT_CHARS
from ragloop.core.pipeline.rating_questions import question_hash
from ragloop.core.serve.errors import ServeError
from ragloop.core.workspace import utcnow

SERVE_RATER = "serve"            # the rater name (the `rater` column) of served feedback
SERVE_SESSION = "serve"          # the comparisons' session: not an eval one, so it trains
THUMB_SCORES = {"up": 5, "down": 1}
MAX_CORRECTION_CHARS = 8000
CORRECTION_GENERATOR = "human"


def insert(db, table: str, row: dict) -> None:
    """One row, by plain SQL: sqlite-utils' insert reads the schema on every call (most of a
    feedback write's time), and these tables and columns are the code's own."""
    columns = ", ".join(row)
    db.conn.execute(f"insert into {table} ({columns}) values ({', '.join('?' * len(row))})",
                    list(row.values()))


def question_id(db, text: str, ref: str) -> str:
    """The question row for `text` (made once; `rate` finds the same row by its hash)."""
    digest = question_hash(text)
    db.execute("insert or ignore into questions (id, text, text_hash, origin, origin_ref, "
               "created_at) values (?, ?, ?, 'serve', ?, ?)",
               [new_id(), text, digest, ref, utcnow()])
    return db.execute("select id from questions where text_hash = ?", [digest]).fetchone()[0]


def candidate_row(answer, model, generator_name: str, adapter_id, index_version,
                  extra: dict | None = None) -> dict:
    """A candidate as `rate` stores one: the rendered prompt the model saw, and its settings."""
    passages = answer.prompt.passages
    params = {**answer.params, "source": "serve", "notes": answer.prompt.notes,
              "timings": answer.timings, **(extra or {})}
    return {"id": new_id(), "text": answer.text, "prompt": model.render(answer.prompt.messages),
            "messages_json": json.dumps(answer.prompt.messages),
            "chunk_ids_json": json.dumps([h.chunk_id for h in passages]),
            "scores_json": json.dumps(answer.scores[:len(passages)]),
            "index_version": index_version, "generator": generator_name,
            "model_id": model.model_id, "adapter": adapter_id,
            "params_json": json.dumps(params, default=str), "seed": answer.params.get("seed"),
            "created_at": utcnow()}


def hits_json(hits) -> str:
    return json.dumps([[h.chunk_id, h.text] for h in hits])


def record_answers(db, question: str, answers: list[tuple], *, user: str | None = None,
                   compare: tuple | None = None) -> list[str]:
    """Store served answers in the caller's transaction. `answers` holds (trace id, a new
    candidate row or the id of a stored one for a cached answer, trace fields: adapter,
    ask_id, hits, cached); `compare`: (compare id, index of the answer shown as "a") for two
    answers shown side by side. Returns the answers' candidate ids."""
    qid = question_id(db, question, answers[0][0])
    ids = []
    for trace_id, candidate, trace in answers:
        if isinstance(candidate, dict):
            insert(db, "candidates", {**candidate, "question_id": qid})
            candidate = candidate["id"]
        ids.append(candidate)
        insert(db, "serve_traces", {
            "id": trace_id, "kind": "ask", "question": question, "question_id": qid,
            "candidate_id": candidate, "ask_id": trace.get("ask_id"),
            "adapter": trace.get("adapter"), "hits_json": trace["hits"],
            "cached": int(bool(trace.get("cached"))), "user": user, "created_at": utcnow()})
    if compare is not None:
        compare_id, left = compare
        # A head-to-head has no one adapter: each answer's trace names its own.
        adapters = {trace.get("adapter") for _, _, trace in answers}
        insert(db, "serve_traces", {
            "id": compare_id, "kind": "compare", "question": question, "question_id": qid,
            "candidate_id": ids[0], "candidate_b": ids[1], "left_candidate": ids[left],
            "adapter": adapters.pop() if len(adapters) == 1 else None,
            "hits_json": answers[0][2]["hits"],
            "user": user, "created_at": utcnow()})
    return ids


def record_search(db, query: str, hits, user: str | None = None) -> str:
    trace_id = new_id()
    insert(db, "serve_traces", {"id": trace_id, "kind": "search", "question": query,
                                "hits_json": hits_json(hits), "user": user,
                                "created_at": utcnow()})
    return trace_id


# ---- feedback ---------------------------------------------------------------------------

ANSWER_KINDS = ("thumbs", "score", "correction")


def check(db, fb: dict) -> dict:
    """The trace `fb` is about, once everything in `fb` is known to fit it; else ServeError."""
    trace_id, compare_id = fb.get("trace_id"), fb.get("compare_id")
    if bool(trace_id) == bool(compare_id):
        raise ServeError("give either trace_id (an answer or search) or compare_id "
                         "(a comparison), not both or neither")
    wanted = trace_id or compare_id
    trace = next(db.query("select * from serve_traces where id = ?", [wanted]), None)
    if trace is None:
        name = "trace_id" if trace_id else "compare_id"
        raise ServeError(f"unknown {name} {wanted!r}; use one this server returned", 404)
    given = [k for k in (*ANSWER_KINDS, "passages", "comment", "verdict")
             if fb.get(k) not in (None, {}, "")]
    if not given:
        raise ServeError("the feedback is empty; give thumbs, score, correction, passages "
                         "or comment (or a verdict with compare_id)")
    if compare_id:
        if trace["kind"] != "compare":
            raise ServeError(f"{compare_id!r} is a trace, not a comparison; send it as "
                             f"trace_id")
        if not fb.get("verdict"):
            raise ServeError("a comparison takes a verdict: a, b, tie or both-bad")
        wrong = [k for k in given if k in ANSWER_KINDS]
        if wrong:
            raise ServeError(f"{wrong[0]} goes with the trace_id of one answer, not with "
                             f"compare_id")
    else:
        if fb.get("verdict"):
            raise ServeError("a verdict goes with compare_id, not trace_id")
        if trace["kind"] == "compare":
            raise ServeError(f"{trace_id!r} is a comparison; send it as compare_id")
        if trace["kind"] == "search":
            wrong = [k for k in given if k in ANSWER_KINDS]
            if wrong:
                raise ServeError(f"{wrong[0]} needs an answer; this trace is a search, which "
                                 f"takes only passages and comment")
    if fb.get("correction") is not None:
        text = fb["correction"].strip()
        if not text:
            raise ServeError("the correction is empty; write the answer as it should be")
        if len(text) > MAX_CORRECTION_CHARS:
            raise ServeError(f"the correction is over {MAX_CORRECTION_CHARS} characters")
        served = db.execute("select text from candidates where id = ?",
                            [trace["candidate_id"]]).fetchone()[0]
        if text == served.strip():
            raise ServeError("the correction is the answer as served; change it, or send "
                             "thumbs up instead")
    if len((fb.get("comment") or "").strip()) > MAX_COMMENT_CHARS:
        raise ServeError(f"the comment is over {MAX_COMMENT_CHARS} characters")
    hits = json.loads(trace["hits_json"])
    for key in fb.get("passages") or {}:
        if not (str(key).isdigit() and 1 <= int(key) <= len(hits)):
            raise ServeError(f"passage {key!r} is not one of the sources 1..{len(hits)}")
    return trace


def apply(db, fb: dict, rater_id: str) -> str:
    """Check `fb` and write what it says, in the caller's transaction; the feedback id."""
    trace = check(db, fb)
    now, who = utcnow(), {"rater": SERVE_RATER, "rater_id": rater_id}
    qid = trace["question_id"] or question_id(db, trace["question"], trace["id"])
    comparison_id = None
    served = trace["candidate_id"]
    if fb.get("verdict"):
        comparison_id = _compare(db, trace, fb["verdict"], who, now)
    if fb.get("thumbs"):
        _score(db, served, THUMB_SCORES[fb["thumbs"]], who, now)
    if fb.get("score") is not None:
        _score(db, served, int(fb["score"]), who, now)
    if fb.get("correction") is not None:
        comparison_id = _correct(db, trace, qid, fb["correction"].strip(), who, now)
    hits = json.loads(trace["hits_json"])
    for key, relevant in (fb.get("passages") or {}).items():
        chunk_id, text = hits[int(key) - 1]
        insert(db, "passage_judgments", {
            "id": new_id(), "comparison_id": comparison_id, "question_id": qid,
            "chunk_id": chunk_id, "chunk_text": text, "relevant": int(bool(relevant)),
            **who, "created_at": now})
    comment = (fb.get("comment") or "").strip()
    if comment and comparison_id:
        insert(db, "comments", {"id": new_id(), "comparison_id": comparison_id,
                                "text": comment, "rater_id": rater_id, "created_at": now})
    feedback_id = new_id()
    insert(db, "serve_feedback", {
        "id": feedback_id, "trace_id": trace["id"],
        "value_json": json.dumps({k: v for k, v in fb.items() if v is not None}),
        "rater_id": rater_id, "adapter": trace["adapter"], "created_at": now})
    return feedback_id


def _score(db, candidate_id: str, score: int, who: dict, now: str) -> None:
    insert(db, "scores", {"id": new_id(), "comparison_id": None,
                          "candidate_id": candidate_id, "score": score, **who,
                          "created_at": now})


def _comparison(db, qid, a, b, left, choice, who, now) -> str:
    comparison_id = new_id()
    insert(db, "comparisons", {
        "id": comparison_id, "question_id": qid, "candidate_a": a, "candidate_b": b,
        "left_candidate": left, "choice": choice, **who, "session": SERVE_SESSION,
        "seconds": None, "created_at": now})
    return comparison_id


def _compare(db, trace: dict, verdict: str, who: dict, now: str) -> str:
    """The verdict's a/b mean as shown; stored choices mean candidate_a/candidate_b."""
    a, b, left = trace["candidate_id"], trace["candidate_b"], trace["left_candidate"]
    choice = verdict
    if verdict in ("a", "b"):
        winner = left if verdict == "a" else (b if left == a else a)
        choice = "a" if winner == a else "b"
    return _comparison(db, trace["question_id"], a, b, left, choice, who, now)


def _correct(db, trace: dict, qid: str, text: str, who: dict, now: str) -> str:
    """The correction as a candidate on the served answer's prompt, which it beats."""
    served = next(db.query(
        "select prompt, messages_json, chunk_ids_json, scores_json, index_version, params_json "
        "from candidates where id = ?", [trace["candidate_id"]]))
    params = {**json.loads(served.pop("params_json")), "source": "correction",
              "trace": trace["id"]}
    correction_id = new_id()
    insert(db, "candidates", {
        **served, "id": correction_id, "question_id": qid, "text": text,
        "generator": CORRECTION_GENERATOR, "model_id": CORRECTION_GENERATOR, "adapter": None,
        "params_json": json.dumps(params, default=str), "seed": None, "created_at": now})
    return _comparison(db, qid, trace["candidate_id"], correction_id, trace["candidate_id"],
                       "b", who, now)
