"""Every error the project raises on purpose derives from :class:`CitybrainError`."""

from __future__ import annotations

import errno


class CitybrainError(Exception):
    """Base class of the project's own errors."""


class ConfigError(CitybrainError):
    """A setting or command-line option is wrong."""


class CityFileError(CitybrainError):
    """A city file is malformed. ``where`` names the entry/field (and line when known)."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class BadSeriesFile(CitybrainError):
    """A CSV series (a NAB file, a feed to replay) cannot be read: ``line`` is 1-based (the header
    is line 1), 0 for the file as a whole; ``problem`` says what is wrong there."""

    def __init__(self, path: object, line: int, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        super().__init__(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")


class RejectedMessage(CitybrainError):
    """An incoming message cannot be accepted.

    ``reason`` is a short stable code (``bad_json``, ``nan_value``, ``unknown_device`` ...) that
    is counted per reason; ``detail`` is the human explanation kept with the dead letter.
    """

    def __init__(self, reason: str, detail: str = "", device: str | None = None) -> None:
        self.reason = reason
        self.detail = detail or reason
        self.device = device
        super().__init__(f"{reason}: {self.detail}")


class IllegalTransition(CitybrainError):
    """An incident action is not allowed in the incident's current state."""


class NotFound(CitybrainError):
    """A requested incident, unit or device does not exist."""


class PermissionDenied(CitybrainError):
    """The caller's role does not allow the action."""


class ComponentStartError(CitybrainError):
    """A component could not start: port taken, binary missing, server unreachable."""


class StoreUnavailable(CitybrainError):
    """A store (incident database, time-series store) cannot be reached or written just now.

    Callers hold their input and retry: nothing is acknowledged upstream until the store has it.
    """


#: OS errors of a disk that is full, read-only or failing (waiting, or an operator, can cure them)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES})
#: what SQLite says when its disk, not the SQL, is the problem (full, read-only, gone)
SQLITE_OUTAGES = ("disk i/o error", "unable to open database", "database or disk is full", "readonly database")


def is_sqlite_outage(e: BaseException) -> bool:
    """A SQLite error that waiting can cure (its disk is full, read-only or gone), not a bug."""
    import sqlite3

    return isinstance(e, sqlite3.OperationalError) and any(m in str(e).lower() for m in SQLITE_OUTAGES)


class BrokerRefused(CitybrainError):
    """The MQTT broker did not accept the connection (credentials, authorisation, no answer)."""
