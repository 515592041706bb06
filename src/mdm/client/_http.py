"""What every MDM service client shares: one keep-alive ``httpx.Client`` and the error mapping.

The catalog and storage-element clients differ in what they say, not in how they talk: both
hold one ``httpx.Client`` (injectable transport, STYLE C11), are context managers, build mutual
TLS from ``settings.tls``, and turn a problem+json answer back into the ``mdm.errors`` class the
server raised (a network failure becomes ``TransportError`` with the httpx error as cause).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import httpx

from mdm.errors import ConfigError, RemoteError, from_problem


class ServiceClient:
    """Base of the clients of one MDM service. Use as a context manager, or call ``close()``."""

    #: How messages name the service, and the setting that holds its URL.
    service: ClassVar[str] = "service"
    url_setting: ClassVar[str] = ""
    default_timeout: ClassVar[float] = 30.0

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        if not base_url:
            env = "MDM_" + self.url_setting.upper().replace(".", "__")
            raise ConfigError(
                f"no {self.service} URL: set {self.url_setting} ({env})", key=self.url_setting
            )
        self.base_url = base_url.rstrip("/")
        timeout = self.default_timeout if timeout is None else timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            verify=verify,
            headers=dict(headers or {}),
            # A dead host should fail in seconds even when a slow answer may take minutes.
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        )

    @classmethod
    def _url_from(cls, settings: Any) -> str:
        section, _, key = cls.url_setting.partition(".")
        return str(getattr(getattr(settings, section), key))

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> Self:
        """Mutual TLS with ``settings.tls`` (proxy, or cert and key; CA directory)."""
        from mdm.pki.tls import client_ssl_context

        return cls(cls._url_from(settings), verify=client_ssl_context(settings.tls), **kw)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def http(self) -> httpx.Client:
        """The underlying keep-alive client (shared by range readers)."""
        return self._http

    def _raise_for(self, response: httpx.Response, method: str, path: str) -> None:
        """Raise the ``mdm.errors`` class a 4xx/5xx problem+json answer names."""
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and ("type" in body or "detail" in body):
            raise from_problem(body, response.status_code)
        raise RemoteError(
            f"{self.service} answered {response.status_code} to {method} {path}",
            status=response.status_code,
        )
