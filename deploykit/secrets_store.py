"""Generated secrets, stored next to the inventory, encrypted with a key kept outside its directory.

File: `<inventory dir>/<deployment name>.secrets` (a Fernet token: AES-128-CBC + HMAC-SHA256), safe to commit.
Key: `$DEPLOYKIT_KEY_FILE`, else `~/.config/deploykit/keys/<deployment name>.key` (created on first use, 0600).
A key file inside the inventory's directory is refused: whoever can read the directory must not get both.

Most secrets are random passwords, generated on first use. A secret of another kind (a private key, a
certificate) is made by the service that owns it, which registers a `SecretMaker` for its names: asked for
that secret, the store hands the maker the stored value, and keeps what it returns (the same value while it is
still good: a second plan changes nothing; a new one when it must be renewed, stored before it is used).

Rotation (`deploykit secrets rotate`): `rotate` makes new values and keeps each old one as the secret's
*previous* value until `finish_rotation`; meanwhile services that can accept two values (Redis's ACL) accept
both, so clients switch over one at a time (docs/operations.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets as pysecrets
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from deploykit.errors import DeploykitError
from deploykit.inventory.model import Inventory
from deploykit.secret import Redactor, Secret

ALPHABET = string.ascii_letters + string.digits  # safe in every config format we write
LENGTH = 32


class SecretsError(DeploykitError):
    """The secrets file or its key cannot be used."""


@dataclass(frozen=True)
class SecretMaker:
    """How the secrets named `pattern` (fnmatch) are made, instead of a random password.

    `make(store, name, current)` returns the value to keep: `current` (None: nothing stored yet) while it is
    still good, else a new one. It may ask the store for other secrets (e.g. a CA's key to sign with). Public
    values (a certificate) are kept in the store beside their keys but are not redacted from plans.
    """

    pattern: str
    make: Callable[[SecretStore, str, str | None], str]
    public: bool = False


_MAKERS: dict[str, SecretMaker] = {}


def register_maker(maker: SecretMaker) -> None:
    """Called by the service package that owns the secrets (at import, like its registration)."""
    _MAKERS[maker.pattern] = maker


def maker_for(name: str) -> SecretMaker | None:
    # The registered services' makers: imported here, not at the top (the services build on this module), so
    # that a store used on its own (the `secrets` command) knows them too.
    import deploykit.services  # noqa: F401

    return next((m for m in _MAKERS.values() if fnmatchcase(name, m.pattern)), None)


def key_path(inv: Inventory) -> Path:
    env = os.environ.get("DEPLOYKIT_KEY_FILE")
    if env:
        return Path(env).expanduser().resolve()
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return _named_file(base / "deploykit" / "keys", inv.name, ".key", "the secrets key").resolve()


def secrets_path(inv: Inventory) -> Path:
    # per deployment: every inventory file of it shares them
    return _named_file(inv.directory, inv.name, ".secrets", "the secrets file")


def _named_file(directory: Path, name: str, suffix: str, what: str) -> Path:
    """`directory/<name><suffix>`, refused unless it is a file directly in `directory`.

    Validation already restricts the deployment name to a slug; this holds for an Inventory built any other
    way. The check is on the path as computed, not as resolved: a key file that is a symlink the user made
    stays theirs to make.
    """
    path = directory / f"{name}{suffix}"
    if path.parent != directory or "\x00" in name:
        raise SecretsError(f"the deployment name {name!r} would put {what} at {path}, outside {directory}; "
                           "the name must be a plain slug like 'chirp' (deploykit validate checks it)")
    return path


class SecretStore:
    def __init__(self, inv: Inventory, *, create_key: bool = True) -> None:
        self.inv = inv
        self.path = secrets_path(inv)
        self.key_file = key_path(inv)
        if self.key_file.is_relative_to(inv.directory.resolve()):
            raise SecretsError(f"the secrets key {self.key_file} is inside the inventory directory "
                               f"{inv.directory}; keep it elsewhere (set DEPLOYKIT_KEY_FILE)")
        self._fernet = Fernet(self._load_key(create_key))
        self._values, self._previous = self._read()
        self._checked: dict[str, str] = {}  # made secrets whose maker kept them in this run
        self._lock_depth = 0

    def _load_key(self, create: bool) -> bytes:
        if self.key_file.exists():
            key = self.key_file.read_bytes().strip()
            try:
                Fernet(key)
            except ValueError as exc:
                raise SecretsError(f"{self.key_file} is not a deploykit secrets key") from exc
            return key
        if self.path.exists():
            raise SecretsError(f"{self.path} exists but its key {self.key_file} is missing; restore the key "
                               "(or set DEPLOYKIT_KEY_FILE) — a new key cannot read the stored secrets")
        if not create:
            raise SecretsError(f"no secrets key at {self.key_file}; nothing has been generated yet")
        self.key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Fernet.generate_key()
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
        return key

    def _read(self) -> tuple[dict[str, str], dict[str, str]]:
        """(current values, previous values of a rotation under way)."""
        if not self.path.exists():
            return {}, {}
        try:
            data = json.loads(self._fernet.decrypt(self.path.read_bytes().strip()))
        except InvalidToken as exc:
            raise SecretsError(f"{self.path} cannot be decrypted with {self.key_file}: wrong key or a "
                               "damaged file") from exc
        values = data.get("secrets", {}) if isinstance(data, dict) else {}
        previous = data.get("previous", {}) if isinstance(data, dict) else {}
        return {str(k): str(v) for k, v in values.items()}, {str(k): str(v) for k, v in previous.items()}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The store's file lock; re-entrant (a maker asks for the secrets it is made from)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(f, fcntl.LOCK_UN)

    def _write(self) -> None:
        data: dict[str, object] = {"version": 1, "secrets": self._values}
        if self._previous:
            data["previous"] = self._previous
        token = self._fernet.encrypt(json.dumps(data, sort_keys=True).encode())
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(token + b"\n")
        os.replace(tmp, self.path)

    def get(self, name: str) -> Secret:
        """The secret `name`, generated and stored on first use (made by its maker, if it has one)."""
        maker = maker_for(name)
        if maker is not None:
            return self._made(name, maker)
        if name not in self._values:
            with self._locked():
                self._values.update({k: v for k, v in self._read()[0].items() if k not in self._values})
                if name not in self._values:
                    self._values[name] = "".join(pysecrets.choice(ALPHABET) for _ in range(LENGTH))
                    self._write()
        return Secret(name, self._values[name])

    def _made(self, name: str, maker: SecretMaker) -> Secret:
        current = self._values.get(name)
        if current is not None and self._checked.get(name) == current:
            return Secret(name, current)
        value = maker.make(self, name, current)
        if value != current:
            with self._locked():
                stored = self._read()[0]
                self._values.update({k: v for k, v in stored.items() if k not in self._values})
                theirs = stored.get(name)
                if theirs is not None and theirs != current:  # another run made it meanwhile: judge theirs
                    value = maker.make(self, name, theirs)
                self._values[name] = value
                if value != stored.get(name):
                    self._write()
        self._checked[name] = value
        return Secret(name, value)

    def existing(self, name: str) -> Secret:
        if name not in self._values:
            known = ", ".join(sorted(self._values)) or "none yet"
            raise SecretsError(f"no secret named '{name}' for {self.inv.name} (known: {known})")
        return Secret(name, self._values[name])

    def names(self) -> list[str]:
        return sorted(self._values)

    def previous(self, name: str) -> Secret | None:
        """The value `name` had before a rotation that is not finished yet (None: no rotation of it)."""
        value = self._previous.get(name)
        return None if value is None else Secret(name, value)

    def rotating(self) -> list[str]:
        """The secrets of a rotation under way (rotated, not finished)."""
        return sorted(self._previous)

    def rotate(self, names: list[str]) -> None:
        """New values for `names` (each made as on first use), the old ones kept as previous values; stored at
        once. A secret already rotating keeps its oldest previous value (what the hosts may still hold)."""
        with self._locked():
            self._values, self._previous = self._read()
            for name in names:
                old = self._values.pop(name, None)
                self._checked.pop(name, None)
                if old is not None:
                    self._previous.setdefault(name, old)
            self._write()
        for name in names:
            self.get(name)

    def finish_rotation(self) -> None:
        """Forget the previous values: from now on only the new ones are accepted anywhere."""
        with self._locked():
            self._values, _ = self._read()
            self._previous = {}
            self._write()

    def redactor(self) -> Redactor:
        """Every stored value (previous ones too) but the public ones (certificates), and any PEM private key."""
        values = [*self._values.items(), *self._previous.items()]
        return Redactor(Secret(k, v) for k, v in values if not _public(k))


def _public(name: str) -> bool:
    maker = maker_for(name)
    return maker is not None and maker.public
