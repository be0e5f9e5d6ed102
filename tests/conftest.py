"""Every test gets its own workspace; nothing touches the user's real one."""

import pytest


@pytest.fixture(autouse=True)
def ragloop_home(tmp_path, monkeypatch):
    home = tmp_path / "ragloop-home"
    monkeypatch.setenv("RAGLOOP_HOME", str(home))
    monkeypatch.delenv("RAGLOOP_LOAD_PLUGINS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home
