"""TLS for the router's own port: router.tls_cert and router.tls_key (or
--tls-cert/--tls-key), checked when the catalogue is read so that a wrong
pair is a configuration error at start, not a server that never answers.

The private key is read by the ssl module only; the router keeps its path,
never its content. An encrypted key is refused (the router runs unattended:
there is nobody to type a passphrase).
"""

from __future__ import annotations

import os
import ssl

from router.catalogue.config import ConfigError


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The server side of TLS with the standard library's defaults (TLS 1.2 and newer)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key, password=_no_passphrase)
    return context


def _no_passphrase() -> str:
    raise ssl.SSLError("the private key is encrypted; give it without a passphrase")


def check_tls(cert: str | None, key: str | None, source: str,
              names: tuple[str, str] = ("router.tls_cert", "router.tls_key")) -> None:
    """Both or neither; both readable; the key belongs to the certificate. `names` are
    the keys (or flags) errors name."""
    if cert is None and key is None:
        return
    if cert is None or key is None:
        missing, given = names if cert is None else names[::-1]
        raise ConfigError(source, missing, f"expected a file: {given} is set, and TLS needs both the "
                          "certificate and its private key")
    for name, path in zip(names, (cert, key), strict=True):
        if not os.path.isfile(path):
            raise ConfigError(source, name, f"expected a PEM file, got {path!r} (no such file)")
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise ConfigError(source, name, f"cannot read {path}: {e.strerror or e}") from None
    try:
        server_context(cert, key)
    except ssl.SSLError as e:
        if getattr(e, "reason", None) == "KEY_VALUES_MISMATCH":
            why = f"the private key {key} does not belong to the certificate {cert}"
        else:
            why = f"cannot load the certificate {cert} with the key {key}: {e}"
        raise ConfigError(source, names[1], why) from None
