"""Secrets as a type: the value is there for templates, never in a repr, a log line or a plan."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Any PEM private key (PKCS#8, "EC", "RSA", "ENCRYPTED", "OPENSSH" ...), known to the store or not: a key file's
# old content read from a host (the key it replaces is no longer stored anywhere) must not reach a plan either.
PRIVATE_KEY_PEM = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)
# A key cut short (a damaged file): everything from its BEGIN line on.
PRIVATE_KEY_UNENDED = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*\Z", re.S)
PRIVATE_KEY_REDACTED = "<redacted:private key>"


class Secret:
    __slots__ = ("name", "_value")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self._value = value

    def reveal(self) -> str:
        """The real value: only for rendering a config file or a command sent to a host."""
        return self._value

    def __str__(self) -> str:
        return f"<secret:{self.name}>"

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.name == self.name and other._value == self._value

    def __hash__(self) -> int:
        return hash((self.name, self._value))


class Redactor:
    """Replaces every known secret value in text with `<redacted:name>`, and any PEM private key with
    `<redacted:private key>`."""

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        self._pairs = sorted(((s.reveal(), s.name) for s in secrets if s.reveal()), key=lambda p: -len(p[0]))

    def __call__(self, text: str) -> str:
        for value, name in self._pairs:
            if value in text:
                text = text.replace(value, f"<redacted:{name}>")
        if "PRIVATE KEY-----" in text:
            text = PRIVATE_KEY_PEM.sub(PRIVATE_KEY_REDACTED, text)
            text = PRIVATE_KEY_UNENDED.sub(PRIVATE_KEY_REDACTED, text)
        return text
