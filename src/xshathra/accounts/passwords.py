"""Password hashing with argon2id (RFC 9106's low-memory profile, argon2-cffi's default).

Pure functions; the service runs them in a worker thread, a few at a time (see
`service.AccountService`), because each costs ~64 MiB and tens of milliseconds of CPU.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher(type=Type.ID)
# Verified when the email is unknown, so an unknown email costs as much time as a wrong
# password and the answer's timing does not tell which emails have accounts.
_DUMMY_HASH = _hasher.hash("not the password of anyone")


def hash_password(password: str) -> str:
    """An argon2id hash in the PHC string format (`$argon2id$v=19$m=...`)."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; with no hash, spends the same time and answers False."""
    try:
        _hasher.verify(password_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with other parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)
