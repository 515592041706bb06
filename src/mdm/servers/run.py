"""Run an ASGI app over mutual TLS with uvicorn, and hand each request the caller's Identity.

Why not plain ``uvicorn.run``: ASGI has no standard way to pass the client's *verified chain* to
the app, and for grid proxies the leaf certificate (what ``getpeercert()`` shows) is the proxy,
not the person. So this module pins uvicorn's h11 protocol to a subclass that, once per TLS
connection (at ``connection_made``, i.e. after the handshake), reads the verified chain,
computes the ``mdm.acl.Identity`` with ``mdm.pki.tls.identity_from_chain`` and wraps the app so
that every request on that connection gets::

    scope["extensions"]["mdm.identity"]        # Identity, only when a chain was verified
    scope["extensions"]["mdm.credential_error"]  # str, when a chain was presented but refused
    scope["extensions"]["tls"]                 # ASGI TLS extension (PEM chain, versions)

Apps read it with ``mdm.servers.http.identity(request)`` / ``require_identity(request)``.

Three ways to run an app:

* ``ServerThread(app, tls=...)`` / ``running_server(app, tls=...)``: in a background thread on
  a free loopback port (``port=0``); ``.url`` / ``.port`` are known once ``start()`` returns. For
  tests and for ``mdm demo`` (several servers in one process).
* ``serve_forever(app, tls=...)``: blocking, for ``mdm serve ...``; SIGINT/SIGTERM stop it
  gracefully (uvicorn finishes the running requests).
* ``build_server(...)``: the ``uvicorn.Server`` and its bound socket, for anything else.

TLS is on when ``tls`` (``mdm.settings.TlsSettings`` with ``cert``, ``key``, ``ca_dir``, and
optionally ``vomsdir``) or ``ssl_context`` is given. Client certificates are *optional* at the
TLS level (see ``mdm.pki.tls.server_ssl_context``): a caller without one reaches the app without
an identity and gets a clean 401 problem+json, while a presented certificate that does not
verify still aborts the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mdm.acl import SCOPE_KEY
from mdm.errors import ConfigError, CredentialError
from mdm.pki.tls import identity_from_chain, peer_chain, server_ssl_context
from mdm.servers.http import CREDENTIAL_ERROR_KEY
from mdm.settings import TlsSettings

logger = logging.getLogger(__name__)

ASGIApp = Callable[..., Any]

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


@dataclass(frozen=True)
class _Trust:
    """What the protocol needs to turn a verified chain into an Identity."""

    ca_dir: Path | None
    vomsdir: Path | None

    def extensions_for(self, ssl_object: ssl.SSLObject) -> dict[str, Any]:
        try:
            chain = peer_chain(ssl_object)
        except Exception:  # fail closed, like below
            logger.exception("could not read the client certificate chain")
            return {CREDENTIAL_ERROR_KEY: "could not read the certificate chain"}
        tls_ext: dict[str, Any] = {
            "server_cert": None,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der) for der in chain],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
            "cipher_suite": None,
        }
        ext: dict[str, Any] = {"tls": tls_ext}
        if not chain:
            return ext
        if self.ca_dir is None:
            ext[CREDENTIAL_ERROR_KEY] = "server has no CA directory to verify client certificates"
            return ext
        try:
            who = identity_from_chain(chain, self.ca_dir, self.vomsdir, datetime.now(UTC))
        except CredentialError as exc:
            reason = str(exc.context.get("reason") or exc.message)
            logger.info("client certificate refused: %s", reason)
            ext[CREDENTIAL_ERROR_KEY] = reason
            tls_ext["client_cert_error"] = reason
            return ext
        except Exception:  # fail closed: a bug here must not let anybody in
            logger.exception("could not evaluate a client certificate chain")
            ext[CREDENTIAL_ERROR_KEY] = "internal error while verifying the certificate chain"
            return ext
        tls_ext["client_cert_name"] = who.attributes.get("leaf_dn", who.dn)
        ext[SCOPE_KEY] = who
        logger.debug("TLS client dn=%s fqans=%s proxy=%s", who.dn, who.fqans, who.is_proxy)
        return ext


class _WithExtensions:
    """Per-connection ASGI wrapper: merges the connection's extensions into each scope."""

    __slots__ = ("app", "extensions")

    def __init__(self, app: ASGIApp, extensions: dict[str, Any]) -> None:
        self.app = app
        self.extensions = extensions

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            scope["extensions"] = {**(scope.get("extensions") or {}), **self.extensions}
        await self.app(scope, receive, send)


class IdentityH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the caller's Identity computed once per TLS connection.

    ``trust`` is set on a per-server subclass made by ``build_server``.
    """

    trust: ClassVar[_Trust | None] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or self.trust is None:
            return
        self.app = _WithExtensions(self.app, self.trust.extensions_for(ssl_object))


class _Server(uvicorn.Server):
    """uvicorn's server, stopping *quietly* on SIGINT/SIGTERM.

    uvicorn re-raises a caught signal after its graceful shutdown, so the process dies of that
    signal (exit status -15) and nothing after ``run()`` executes. MDM's CLI wants the graceful
    shutdown *and* a normal return (exit 0, ``finally`` blocks run), so the handlers here only
    ask the server to exit (a second SIGINT forces it, as in uvicorn).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)
            if self._captured_signals:
                names = ", ".join(signal.Signals(s).name for s in self._captured_signals)
                logger.info("server stopped on %s", names)


def _context_from(tls: TlsSettings) -> ssl.SSLContext:
    if tls.cert is None or tls.ca_dir is None:
        raise ConfigError("a TLS server needs tls.cert and tls.ca_dir (and tls.key)", key="tls")
    return server_ssl_context(tls.cert, tls.key, tls.ca_dir)


def build_server(
    app: ASGIApp,
    *,
    tls: TlsSettings | None = None,
    ssl_context: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str | None = None,
    timeout_graceful_shutdown: float | None = 10.0,
    **uvicorn_options: Any,
) -> tuple[uvicorn.Server, socket.socket]:
    """A configured ``uvicorn.Server`` and the listening socket it will serve on.

    The socket is bound (and listening) here, so the real port is known before the server runs
    even with ``port=0``. ``ssl_context`` overrides the context built from ``tls``; the
    identity needs ``tls.ca_dir`` (and ``tls.vomsdir`` for VOMS FQANs) either way.
    ``uvicorn_options`` go to ``uvicorn.Config`` (e.g. ``limit_concurrency``).
    """
    ctx = ssl_context if ssl_context is not None else (_context_from(tls) if tls else None)
    trust = _Trust(tls.ca_dir if tls else None, tls.vomsdir if tls else None)
    protocol = type("IdentityH11Protocol", (IdentityH11Protocol,), {"trust": trust})
    options: dict[str, Any] = {
        "http": protocol,
        "ws": "none",  # no websockets: nothing to upgrade to, nothing more to import
        "loop": "asyncio",  # the chain API is verified on asyncio's SSL transport
        "lifespan": "auto",
        "proxy_headers": False,  # we terminate TLS ourselves: X-Forwarded-* are not trusted
        "server_header": False,
        "log_config": None,  # the mdm CLI configures logging, uvicorn must not
        "log_level": log_level,
        "timeout_graceful_shutdown": timeout_graceful_shutdown,
    }
    options.update(uvicorn_options)
    if ctx is not None:
        options["ssl_context_factory"] = lambda _config, _default: ctx
    config = uvicorn.Config(app, host=host, port=port, **options)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket says it is TCP. Without it every response waits ~40 ms for the peer's delayed ACK.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(config.backlog)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}", key="port") from exc
    return _Server(config), sock


def _url(sock: socket.socket, secure: bool) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if secure else 'http'}://{shown}:{port}"


class ServerThread:
    """An app served in a background thread; ``start()`` returns once it accepts requests.

    Use as a context manager (``with ServerThread(app, tls=tls) as srv: httpx.get(srv.url)``)
    or call ``start()``/``stop()``. ``stop()`` lets running requests finish (up to
    ``timeout_graceful_shutdown``) and joins the thread; it is safe to call twice.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tls: TlsSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "mdm-server",
        startup_timeout: float = 15.0,
        **uvicorn_options: Any,
    ) -> None:
        self.server, self._sock = build_server(
            app, tls=tls, ssl_context=ssl_context, host=host, port=port, **uvicorn_options
        )
        self.host: str = self._sock.getsockname()[0]
        self.port: int = int(self._sock.getsockname()[1])
        self.url: str = _url(self._sock, self.server.config.is_ssl)
        self._startup_timeout = startup_timeout
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"{name}:{self.port}", daemon=True)

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._sock])
        except BaseException as exc:  # SystemExit on a failed lifespan startup, or a bug
            self._error = exc

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self.server.started:
            if not self._thread.is_alive():
                self._sock.close()
                raise RuntimeError(f"server {self.url} failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"server {self.url} did not start in {self._startup_timeout}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(5.0)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_server(
    app: ASGIApp,
    *,
    tls: TlsSettings | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    **options: Any,
) -> Iterator[ServerThread]:
    """``with running_server(app, tls=tls) as srv:``: a started ``ServerThread``, then stopped."""
    srv = ServerThread(app, tls=tls, host=host, port=port, **options)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def serve_forever(
    app: ASGIApp,
    *,
    tls: TlsSettings | None = None,
    ssl_context: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[str], None] | None = None,
    **uvicorn_options: Any,
) -> None:
    """Serve until SIGINT/SIGTERM (graceful: running requests finish). Blocks; for the CLI.

    ``on_ready(url)`` is called once the socket listens, with the real URL (useful with
    ``port=0``). Without ``tls``/``ssl_context`` the server speaks plain HTTP and nobody is
    authenticated: that is logged as a warning.
    """
    server, sock = build_server(
        app, tls=tls, ssl_context=ssl_context, host=host, port=port, **uvicorn_options
    )
    url = _url(sock, server.config.is_ssl)
    if not server.config.is_ssl:
        logger.warning("serving %s WITHOUT TLS: no caller can be authenticated", url)
    logger.info("serving on %s", url)
    if on_ready is not None:
        on_ready(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


__all__ = [
    "IdentityH11Protocol",
    "ServerThread",
    "build_server",
    "running_server",
    "serve_forever",
]
