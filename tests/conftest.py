"""Every test gets its own workspace; nothing touches the user's real one."""

import os
import signal
import sys
import tempfile

import pytest

# Belt and braces: even a test that undoes its monkeypatching must not reach the user's
# real workspace (the default home is under the XDG data folder).
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="ragloop-tests-xdg-")
# huggingface_hub reads these once, when first imported (often while tests are collected):
# set here, a hub id fails at once instead of after a minute of connection retries.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_name] = "1"
# pytest imports readline, whose SIGWINCH handler a pexpect child inherits and runs when its
# new terminal gets a size (before it execs); once OpenVINO GenAI had run in this process,
# that handler crashed the child (SIGSEGV) and every terminal test after it failed.
signal.signal(signal.SIGWINCH, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def ragloop_home(tmp_path, monkeypatch):
    home = tmp_path / "ragloop-home"
    monkeypatch.setenv("RAGLOOP_HOME", str(home))
    monkeypatch.delenv("RAGLOOP_LOAD_PLUGINS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def packaged_models(tmp_path_factory):
    """`.give(home)`: the workspace at `home` gets the packaged SmolLM2 already converted and
    MiniLM already exported, prepared once per session (tests/packaged_models.py)."""
    from packaged_models import SharedModels
    return SharedModels(tmp_path_factory.mktemp("packaged-models"))


@pytest.fixture
def fresh_plugins():
    """Plugin state rebuilt from the environment before the test and again after it, so a
    test may change RAGLOOP_LOAD_PLUGINS or sys.path and see it, and leaves nothing behind."""
    from ragloop.core.plugins import reset_for_tests
    reset_for_tests()
    yield
    reset_for_tests()


def write_distribution(site, dist, module, source):
    """Lay out an installed distribution the way pip does (the module plus a .dist-info with
    an entry point in group `ragloop`), so importlib.metadata finds it on sys.path or
    PYTHONPATH exactly as it finds a pip-installed plugin, without a build per test."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ragloop]\n{dist} = {module}\n")


@pytest.fixture
def install_fake(tmp_path, monkeypatch, fresh_plugins):
    """`install_fake(dist, module, source)`: a plugin distribution visible to this process;
    its module is dropped from sys.modules afterwards."""
    site = tmp_path / "site-packages"
    modules = []

    def install(dist, module, source):
        write_distribution(site, dist, module, source)
        if str(site) not in sys.path:
            monkeypatch.syspath_prepend(str(site))
        modules.append(module)
        return site

    yield install
    for module in modules:
        sys.modules.pop(module, None)
