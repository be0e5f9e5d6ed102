"""Starting `ragloop serve`: the checks made before anything loads (where it may listen, the
port free), then uvicorn with one app, or `--workers N` processes each with its own.

The socket is bound here, before the models load, so a busy port is one line at once; with
workers, uvicorn hands the same socket to each process and the kernel spreads connections.
`Serving` runs a server on a thread of this process (tests and the benchmark use it).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading

from ragloop.core.errors import RagloopError
from ragloop.core.serve.engine import ServeSettings, settle_heap

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def _imports():
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise RagloopError("`ragloop serve` needs FastAPI and uvicorn: pip install "
                           "'ragloop[serve]'") from None
    return uvicorn


def is_local(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(ws, host: str, token: str | None) -> None:
    """Anywhere but this machine needs tokens: a --token, or rater tokens in the workspace."""
    if is_local(host) or token or ws.db["serve_tokens"].count:
        return
    raise RagloopError(f"--host {host} would let other machines in without a token; give "
                       f"--token T, or add rater tokens with `ragloop serve token add NAME`, "
                       f"or keep the default --host 127.0.0.1")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; a busy port is refused by its number."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as uvicorn does
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise RagloopError(f"port {port} on {host} is in use (another server?); stop it "
                               f"or choose another with --port") from None
        raise RagloopError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host "
                           f"and --port") from None
    sock.set_inheritable(True)
    return sock


def build(settings: ServeSettings, token: str | None, cors):
    """The started engine's app (models loaded: a RagloopError here means it cannot serve)."""
    from ragloop.core.serve.app import create_app
    from ragloop.core.serve.auth import Auth
    from ragloop.core.serve.engine import Engine
    from ragloop.core.workspace import Workspace
    engine = Engine(settings)
    engine.start()
    try:
        auth = Auth(Workspace(settings.home).db_path, token)
        return create_app(engine, auth, cors=cors)
    except BaseException:
        engine.close()
        raise


def config(uvicorn, app, workers: int = 1, quiet: bool = False):
    return uvicorn.Config(app, workers=workers, factory=isinstance(app, str),
                          log_level="warning" if quiet else "info", access_log=not quiet,
                          timeout_graceful_shutdown=5)


def run(settings: ServeSettings, sock: socket.socket, *, workers: int, token: str | None,
        cors, loading) -> None:
    """Serve on `sock` until Ctrl-C. `loading(text)`: a context showing what loads."""
    uvicorn = _imports()
    if workers == 1:
        with loading("Loading the index and the model"):
            app = build(settings, token, cors)
        settle_heap()
        uvicorn.Server(config(uvicorn, app)).run(sockets=[sock])
        return
    from ragloop.core.serve.app import CORS_ENV, SETTINGS_ENV, TOKEN_ENV
    from uvicorn.supervisors import Multiprocess
    os.environ[SETTINGS_ENV] = settings.to_json()
    os.environ[CORS_ENV] = "\n".join(cors)
    if token:
        os.environ[TOKEN_ENV] = token
    Multiprocess(config(uvicorn, "ragloop.core.serve.app:worker_app", workers),
                 sockets=[sock]).run()


class Serving:
    """A server on a thread of this process, on 127.0.0.1 and a free port:

        with Serving(ServeSettings(home=...)) as s:
            httpx.post(s.url + "/v1/ask", json={...})
    """

    def __init__(self, settings: ServeSettings, token: str | None = None, cors=(),
                 port: int = 0):
        self.settings, self.token, self.cors, self.port = settings, token, cors, port

    def __enter__(self) -> Serving:
        uvicorn = _imports()
        self.sock = bind("127.0.0.1", self.port)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.app = build(self.settings, self.token, self.cors)
        self.server = uvicorn.Server(config(uvicorn, self.app, quiet=True))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RagloopError("the server stopped while starting")
            threading.Event().wait(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
