"""Keep the configured API key out of everything the project writes or shows.

The client registers its key (:func:`register`) when it starts talking to a server; from then
on :func:`redact` replaces it with :data:`MASK` in every reply it keeps (so in the instruction
files, the cache and the messages files built from replies), in every error message and log
line it produces, and :class:`RedactingFilter` (installed on the root logger's handlers by
:func:`install_log_redaction`) does the same for any log record, whoever logs it. A server that
echoes the key (a proxy's debug output, a 401 that quotes the request) cannot leak it.
"""

from __future__ import annotations

import logging
import threading

#: what a redacted key reads as
MASK = "[REDACTED-API-KEY]"
#: keys shorter than this are placeholders ("EMPTY", "x"), not secrets: replacing them would
#: garble ordinary text
MIN_SECRET_LENGTH = 8

_lock = threading.Lock()
_secrets: set[str] = set()


def register(secret: str | None) -> None:
    """Remember ``secret`` so that :func:`redact` removes it (placeholders are ignored)."""
    if secret and len(secret) >= MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by :data:`MASK`."""
    if not isinstance(text, str) or not _secrets:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Redact registered secrets from a record's final message (arguments included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            try:
                message = record.getMessage()
            except Exception:   # a broken format string: leave it to logging's own report
                return True
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, ()
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
