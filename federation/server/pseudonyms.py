"""Sites as others see them: a stable pseudonymous id (``site-`` + HMAC-SHA256 of the name) unless the
configuration shows names (``dashboard.show_site_names``).

The HMAC key is a random secret of the server (``server.pseudonym_key``, default
``data_dir/site_pseudonym.key``, mode 0600, created on first start): without it, nobody can test a guessed
hospital name against a pseudonym. The same site keeps the same id across restarts and versions.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def load_or_create_secret(path: Path) -> bytes:
    """The 32-byte secret in ``path``, created (0600, written whole) when absent."""
    if path.exists():
        data = path.read_bytes()
        if len(data) < 32:
            raise ValueError(f"{path} holds {len(data)} bytes; the pseudonym secret needs 32 (delete it to renew)")
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return data


class SiteLabels:
    """How a site is named to anyone but the server's administrator."""

    def __init__(self, secret: bytes, *, show_names: bool) -> None:
        self._secret = secret
        self.show_names = show_names

    def pseudonym(self, name: str) -> str:
        """The site's stable pseudonymous id."""
        return "site-" + hmac.new(self._secret, name.encode(), hashlib.sha256).hexdigest()[:12]

    def label(self, name: str) -> str:
        """The name itself when names are shown, else the pseudonym."""
        return name if self.show_names else self.pseudonym(name)
