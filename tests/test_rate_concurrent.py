"""Rating sessions at the same time against one workspace, with the interleaving set by the
test (events and a barrier between the raters, never sleeps): every rating is stored, none
twice; the sessions share one pair per question; one rater id never rates a question twice;
a killed session's claims block nobody."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from cli_helpers import run
from tiny_models import tiny_causal_lm, tiny_embedder

from ragloop.core.pipeline.rating import Session, Settings
from ragloop.core.pipeline.rating_questions import Question
from ragloop.core.workspace import Workspace
from ragloop.plugins.raters.judge import JudgeRater

N = 6
QUESTIONS = [Question(f"Where does widget {n} live?", "file") for n in range(N)]
GUARD = 120          # seconds: only so a broken build fails instead of hanging
# transformers patches torch globally while it builds a model (the generator's, and the
# embedder's on the first search): one load at a time in a process.
LOADING = threading.Lock()


@pytest.fixture
def indexed(tmp_path, ragloop_home):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"doc{i}.md").write_text(f"# Part {i}\n\nWidget {i} lives in zebra.toml.\n")
    run("index", docs, "-o", f"embedder.model={tiny_embedder()}")
    tiny_causal_lm()            # built here, once: two threads building it would race
    return ragloop_home


def settings():
    return Settings(k=1, max_new_tokens=4, generator_options=(f"model={tiny_causal_lm()}",))


def rate_all(home, rater, rater_id, questions=QUESTIONS, status=None):
    """What `ragloop rate` does, on this thread with its own connection: the outcomes."""
    session = Session(Workspace(home), rater, "judge", rater_id, settings(), skip_rated=True)
    if status is not None:
        session.status = status
    with LOADING:
        session.open()
        session.searcher.search(questions[0].text, k=1)
    try:
        return [session.rate(q, i, len(questions)) for i, q in enumerate(questions, 1)]
    finally:
        session.close()


class Thread(threading.Thread):
    """A thread whose exception reaches the test."""

    def __init__(self, fn, *args, **kwargs):
        super().__init__(daemon=True)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result = self.error = None

    def run(self):
        try:
            self.result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:          # noqa: BLE001 - re-raised by value()
            self.error = exc

    def value(self):
        self.join(GUARD)
        assert not self.is_alive(), "the session hung"
        if self.error is not None:
            raise self.error
        return self.result


class Lockstep(JudgeRater):
    """The judge, but no verdict until the other session's rater has its item too: the two
    sessions rate every question at the same time."""

    def __init__(self, barrier, shown):
        super().__init__()
        self.barrier, self.shown = barrier, shown

    def compare(self, item):
        self.shown.append((item.question, frozenset((item.answer_a, item.answer_b))))
        self.barrier.wait(GUARD)
        return super().compare(item)


def db(home):
    return Workspace(home).db


def test_two_sessions_at_once_lose_nothing(indexed):
    barrier = threading.Barrier(2)
    shown = {who: [] for who in ("judge-1", "judge-2")}
    threads = [Thread(rate_all, indexed, Lockstep(barrier, shown[who]), who) for who in shown]
    for t in threads:
        t.start()
    for t in threads:
        assert all(o is not None and o.comparison_id for o in t.value())
    # The barrier held each verdict until both sessions showed the same question: they
    # overlapped on every item, and saw the same pair of answers.
    assert shown["judge-1"] == shown["judge-2"]
    d = db(indexed)
    assert d["comparisons"].count == 2 * N and d["questions"].count == N
    per_rater = dict(d.execute("select rater_id, count(distinct question_id) from comparisons "
                               "group by rater_id").fetchall())
    assert per_rater == {"judge-1": N, "judge-2": N}
    # One pair per question, rated by both: agreement is measurable on every question.
    assert d["candidates"].count == 2 * N
    pairs = d.execute("select count(distinct candidate_a || candidate_b) from comparisons "
                      "group by question_id").fetchall()
    assert pairs == [(1,)] * N
    assert d["rating_claims"].count == 0
    assert d.execute("pragma foreign_key_check").fetchall() == []


def test_the_second_session_waits_for_the_first_ones_pair(indexed):
    generating, waiting = threading.Event(), threading.Event()
    texts = {"first": [], "second": []}

    def status_of(who):
        from contextlib import contextmanager

        @contextmanager
        def status(text):
            texts[who].append(text)
            if who == "first" and text.startswith("Generating"):
                generating.set()              # the pair is claimed: let the second one in
                assert waiting.wait(GUARD)    # and generate only once it is waiting
            if who == "second" and text.startswith("Waiting"):
                waiting.set()
            yield
        return status

    question = QUESTIONS[:1]
    first = Thread(rate_all, indexed, JudgeRater(), "judge-1", question, status_of("first"))
    first.start()
    assert generating.wait(GUARD)
    second = Thread(rate_all, indexed, JudgeRater(), "judge-2", question, status_of("second"))
    second.start()
    first.value(), second.value()
    assert texts["first"] == ["Loading the model", "Generating two answers (1/1)"]
    assert texts["second"] == ["Loading the model", f"Waiting for another session (pid "
                               f"{os.getpid()}) to generate the answers (1/1)"]
    d = db(indexed)
    assert d["candidates"].count == 2
    assert len({(c["candidate_a"], c["candidate_b"]) for c in d["comparisons"].rows}) == 1


class HeldUp(JudgeRater):
    """The judge, holding its first item until told."""

    def __init__(self, showing, go):
        super().__init__()
        self.showing, self.go = showing, go

    def compare(self, item):
        if not self.showing.is_set():
            self.showing.set()
            assert self.go.wait(GUARD)
        return super().compare(item)


def test_one_rater_id_in_two_sessions_rates_each_question_once(indexed, tmp_path):
    showing, go = threading.Event(), threading.Event()
    first = Thread(rate_all, indexed, HeldUp(showing, go), "alice")
    first.start()
    assert showing.wait(GUARD)                # the first session shows question 0 to alice
    qfile = tmp_path / "q.txt"
    qfile.write_text("".join(q.text + "\n" for q in QUESTIONS))
    second = run("rate", "--rater", "judge", "--rater-id", "alice", "--questions", qfile,
                 "-o", f"model={tiny_causal_lm()}", "--max-new-tokens", 4, "-k", 1)
    go.set()
    outcomes = first.value()
    assert (f"Another session of alice is rating this question; skipped: {QUESTIONS[0].text}"
            in second.stderr)
    assert second.stdout.count("Saved ") == N - 1
    # The first session rated question 0; the rest were rated by the second when it got there.
    assert outcomes[0] is not None and outcomes[1:] == [None] * (N - 1)
    d = db(indexed)
    per_question = d.execute("select question_id, count(*) from comparisons "
                             "group by question_id").fetchall()
    assert len(per_question) == N and {n for _, n in per_question} == {1}
    assert d["candidates"].count == 2 * N and d["rating_claims"].count == 0


CLAIM_AND_HANG = textwrap.dedent("""
    import sys
    from ragloop.core.pipeline.rating import write_transaction
    from ragloop.core.pipeline.rating_claims import Claims
    from ragloop.core.workspace import Workspace
    home, question_hash, fingerprint = sys.argv[1:]
    ws = Workspace(home)
    claims = Claims(ws, "killed-session")
    with write_transaction(ws.db):
        assert claims.take(question_hash, "pair", fingerprint) is None
        assert claims.take(question_hash, "rater", "alice") is None
        assert claims.take("a question nobody asks again", "rater", "alice") is None
    print("claimed", flush=True)
    sys.stdin.read()
""")


def test_a_killed_sessions_claims_block_nobody(indexed, tmp_path):
    probe = Session(Workspace(indexed), JudgeRater(), "judge", "alice", settings())
    probe.open()
    question = QUESTIONS[0]
    holder = subprocess.Popen([sys.executable, "-c", CLAIM_AND_HANG, str(indexed),
                               question.hash, probe.fingerprint],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "claimed\n"
    assert probe.claims.alive("killed-session")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    probe.close()

    qfile = tmp_path / "q.txt"
    qfile.write_text(question.text + "\n")
    result = run("rate", "--rater", "judge", "--rater-id", "alice", "--questions", qfile,
                 "-o", f"model={tiny_causal_lm()}", "--max-new-tokens", 4, "-k", 1)
    assert "Saved 1/1: " in result.stdout and "Waiting" not in result.stderr
    d = db(indexed)
    assert d["candidates"].count == 2 and d["comparisons"].count == 1
    # The kernel dropped the killed session's lock: its claims were taken over or swept,
    # even the one on a question not rated again, and its lock file is gone.
    assert d["rating_claims"].count == 0
    assert list((indexed / "locks").iterdir()) == []
