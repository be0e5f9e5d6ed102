"""ragloop works offline: index, search, ask, rate, train and eval open no connection but to
this machine, even with the hub's offline mode unset (as a user's shell has it), and with
telemetry asked for. One subprocess runs them all, so huggingface_hub is imported fresh under
that environment, behind a socket guard that records and refuses every other connection."""

import json
import os
import subprocess
import sys
import textwrap

from test_train import write
from tiny_models import tiny_causal_lm, tiny_embedder

GUARD = textwrap.dedent('''
    import json, socket, sys, threading, traceback
    ATTEMPTS = []

    def check(what, host):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if host is None or name in ("localhost", "::1", "") or name.startswith("127."):
            return
        ATTEMPTS.append({"what": what, "host": name, "thread": threading.current_thread().name,
                         "stack": "".join(traceback.format_stack(limit=8)[:-2])})
        raise OSError(101, f"network is off in this test ({name})")

    def guard(original, what, host_of):
        def guarded(*args, **kwargs):
            host = host_of(*args)
            if host is not False:
                check(what, host)
            return original(*args, **kwargs)
        return guarded

    inet = (socket.AF_INET, socket.AF_INET6)
    socket.socket.connect = guard(socket.socket.connect, "connect",
                                  lambda s, a: a[0] if s.family in inet else False)
    socket.socket.connect_ex = guard(socket.socket.connect_ex, "connect_ex",
                                     lambda s, a: a[0] if s.family in inet else False)
    socket.create_connection = guard(socket.create_connection, "create_connection",
                                     lambda a, *rest: a[0])
    socket.getaddrinfo = guard(socket.getaddrinfo, "getaddrinfo", lambda host, *rest: host)
''')

COMMANDS = textwrap.dedent('''
    import sys
    from click.testing import CliRunner
    from ragloop.core.cli import cli

    model, embedder, docs, questions, pairs = sys.argv[1:6]
    gen = ["-o", f"model={model}", "--max-new-tokens", "4", "-k", "1"]
    for args in (["index", docs, "-o", f"embedder.model={embedder}"],
                 ["search", "zebrafish"],
                 ["ask", "Where are the zebrafish settings?", *gen],
                 ["rate", "--rater", "judge", "--questions", questions, *gen],
                 ["train", "--method", "dpo", "--data", pairs, "--max-steps", "1",
                  "-o", "max_length=64", "-o", f"model={model}", "--name", "t"],
                 ["eval", "--adapter", "t", "-n", "1", *gen]):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
    # The hub sends telemetry from a thread of its own: wait until it has sent what it was given.
    telemetry = sys.modules.get("huggingface_hub.utils._telemetry")
    if telemetry is not None:
        telemetry._TELEMETRY_QUEUE.join()
    print(json.dumps(ATTEMPTS))
''')


def test_the_main_commands_open_no_connection_beyond_this_machine(tmp_path, ragloop_home):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"d{i}.md").write_text(f"# Part {i}\n\nThe zebrafish tool reads zebra.toml. "
                                       f"Set max_widgets there. " * 3)
    questions = tmp_path / "questions.txt"
    questions.write_text("Where are zebrafish settings?\nWhat limits widgets?\n")
    script = tmp_path / "offline.py"
    script.write_text(GUARD + COMMANDS)
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "CI",
                        "DO_NOT_TRACK", "DISABLE_TELEMETRY")}
    # A user who asked for telemetry still gets none: ragloop promises to send nothing.
    env.update(HF_HUB_DISABLE_TELEMETRY="0", RAGLOOP_HOME=str(ragloop_home))
    pairs = write(tmp_path / "pairs.jsonl", "pairs")     # train needs pairs; the judge may tie
    args = [script, tiny_causal_lm(), tiny_embedder(), docs, questions, pairs]
    done = subprocess.run([sys.executable, *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    attempts = json.loads(done.stdout.strip().splitlines()[-1])
    assert attempts == [], "\n\n".join(f"{a['what']} {a['host']} ({a['thread']}):\n{a['stack']}"
                                       for a in attempts)
