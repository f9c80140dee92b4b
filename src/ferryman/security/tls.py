"""TLS for the HTTP server: a modern-only SSL context, client certificates (mTLS), and the ASGI TLS extension.

The context accepts TLS 1.2 and 1.3 only; TLS 1.2 is limited to forward-secret AEAD suites
(TLS 1.3's suites are all of that kind). With a client CA, every connection must present a
certificate that chains to it — the handshake fails otherwise, before any HTTP is read.

uvicorn's httptools protocol does not put the peer certificate in the ASGI scope, so
:class:`TlsHttpToolsProtocol` (used only when a client CA is configured) reads it once per
connection from the transport and adds the ASGI ``tls`` extension to every request scope on it:
``client_cert_chain`` (PEM) and ``client_cert_name`` (the subject, RFC 4514). The auth guard maps
the subject's CN to a principal (``mtls_principals``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ferryman.config import Settings
from ferryman.errors import InvalidInput

# cryptography's x509 (~70 ms to import) is imported where a certificate is read: only TLS
# servers read any, and start-up is faster without it.
__all__ = ["TlsHttpToolsProtocol", "common_name", "server_ssl_context", "tls_extension", "uvicorn_tls_options"]

_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
# The ASGI TLS extension reports versions as the protocol's numbers.
_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def server_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The server's SSL context from ``tls_cert``/``tls_key`` (and ``tls_client_ca`` for mTLS)."""
    if settings.tls_cert is None or settings.tls_key is None:
        raise InvalidInput("tls_cert and tls_key: both are needed to serve HTTPS")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.tls_client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=settings.tls_client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"TLS files: {exc}") from None
    return context


def uvicorn_tls_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``: the HTTP protocol, and the SSL context when TLS is on."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise InvalidInput("tls_client_ca: client certificates need TLS (set tls_cert and tls_key)")
        return {"http": "httptools"}
    context = server_ssl_context(settings)

    def factory(_config: Any, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    protocol: Any = TlsHttpToolsProtocol if settings.tls_client_ca is not None else "httptools"
    return {"http": protocol, "ssl_context_factory": factory}


@lru_cache(maxsize=1024)
def common_name(subject: str) -> str | None:
    """The CN of an RFC 4514 subject (``CN=alice,O=Example``); None when it has none or does not parse."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        attributes = x509.Name.from_rfc4514_string(subject).get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode(errors="replace")


def tls_extension(transport: asyncio.BaseTransport) -> dict[object, object] | None:
    """The ASGI ``tls`` extension for a connection (None when it is not TLS)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain: list[str] = []
    name: str | None = None
    if der:
        from cryptography import x509

        certificate = x509.load_der_x509_certificate(der)
        chain = [ssl.DER_cert_to_PEM_cert(der)]
        name = certificate.subject.rfc4514_string()
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
        "cipher_name": cipher[0] if cipher else None,
    }


class TlsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, adding the ASGI ``tls`` extension (the client certificate) to each scope."""

    _tls: dict[object, object] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls = tls_extension(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}
