"""The openvino generator's tests (tests/openvino_cases.py), run by pytest in a child process.

Why a child: once OpenVINO GenAI had run in the suite's process, every child that process
forked later through pexpect (the terminal tests of `rate`) died of SIGSEGV before it could
exec, even `/bin/echo`; a child started by subprocess did not. So OpenVINO never runs in
the suite's own process, and each case still passes or fails on its own, by name.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).with_name("openvino_cases.py")


@pytest.mark.skipif(importlib.util.find_spec("openvino_genai") is None,
                    reason="needs ragloop[openvino-genai]")
def test_the_openvino_generator_cases():
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(CASES)], capture_output=True, text=True, cwd=CASES.parent.parent)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout
