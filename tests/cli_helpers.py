"""Running `ragloop` in-process for tests: the helpers every CLI test module uses."""

import re

from click.testing import CliRunner
from tiny_models import tiny_embedder

from ragloop.core.cli import cli


def run(*args, ok=True, input=None):
    """`ragloop ARGS` through click's runner (paths and numbers may be passed as they are);
    with `ok`, assert it exited 0."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, input=input)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def emb():
    """The option that points `index` and `search` at the tiny embedder."""
    return ["-o", f"embedder.model={tiny_embedder()}"]


def counts(output):
    """{added|updated|removed|unchanged|skipped: n} from `index`'s summary line."""
    return {k: int(v) for v, k in re.findall(r"(\d+) (added|updated|removed|unchanged|skipped)",
                                              output)}
