"""What every artifact was made from, atomic writes, and one lock per build folder.

An artifact's *record* is a dict of named input digests (SHA-256 hex): the config sections it
depends on, the data set's identity, the checkpoint, the integer model, the folding, the
generator's version, tool versions. A stage compares the record it would write with the one
stored beside the artifact: equal means current; otherwise :func:`changed` names the inputs
that differ and the stage rebuilds (or refuses, when asked only to read). File dates are never
consulted.

Writers take the folder's :class:`BuildLock` and write through :func:`write_bytes` /
:func:`write_json` (temporary name, then rename), so a failure leaves every existing artifact
byte-identical.
"""

import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path

from .errors import UserError

__all__ = ["sha256_bytes", "sha256_file", "sha256_json", "source_digest", "changed",
           "describe_changes", "write_bytes", "write_json", "read_json", "BuildLock",
           "LockedError"]


def sha256_bytes(data):
    """Return the SHA-256 (hex) of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    """Return the SHA-256 (hex) of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj):
    """Return the SHA-256 of ``obj`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_plain)
    return sha256_bytes(text.encode("utf-8"))


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):              # NumPy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot hash {type(value).__name__} as JSON")


def source_digest(*folders):
    """Return the SHA-256 of the ``*.py`` sources of ``folders`` (names and bytes, sorted):
    the version of a generator, changing with any edit of its code."""
    h = hashlib.sha256()
    for folder in folders:
        folder = Path(folder)
        for path in sorted(folder.glob("*.py")):
            h.update(f"{folder.name}/{path.name}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def changed(recorded, expected):
    """Return the names of the inputs whose digest differs (or is missing) between two records,
    in ``expected``'s order, then those only ``recorded`` has."""
    recorded = recorded or {}
    names = [k for k in expected if recorded.get(k) != expected[k]]
    return names + [k for k in recorded if k not in expected]


def describe_changes(names):
    """Return ``"inputs changed: a, b"`` for a message."""
    return "inputs changed: " + ", ".join(names) if names else "inputs unchanged"


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_bytes(path, data):
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, flushed, then
    renamed over ``path``; on any failure the old file (if any) is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)        # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path, obj):
    """Write ``obj`` as indented, key-sorted JSON atomically (see :func:`write_bytes`)."""
    text = json.dumps(obj, indent=1, sort_keys=True, default=_plain) + "\n"
    return write_bytes(path, text.encode("utf-8"))


def read_json(path):
    """Return the JSON object in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class LockedError(UserError):
    """Another command holds the build folder's lock."""


class BuildLock:
    """The exclusive lock of one build folder, taken by every command that writes into it.

    Use as a context manager; ``what`` names the command in the message another command gets::

        with BuildLock(out, "quantize"):
            ...

    A second holder in another process raises :class:`LockedError` at once (no waiting). The
    same process may take the lock of one folder again (nested steps of one command).
    """

    _held = {}

    def __init__(self, folder, what):
        self._folder = Path(folder)
        self._what = what
        self._handle = None

    @property
    def path(self):
        return self._folder / ".lock"

    def __enter__(self):
        key = str(self._folder.resolve())
        if key in BuildLock._held:
            BuildLock._held[key][1] += 1
            return self
        self._folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (the lock lives as long as the handle)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another command"
            handle.close()
            raise LockedError(f"{self._folder} is in use by {holder}; wait for it to finish or "
                              f"give this {self._what} its own folder with --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{self._what} (pid {os.getpid()})")
        handle.flush()
        BuildLock._held[key] = [handle, 1]
        return self

    def __exit__(self, *exc):
        key = str(self._folder.resolve())
        entry = BuildLock._held.get(key)
        if entry is None:
            return False
        entry[1] -= 1
        if entry[1] == 0:
            del BuildLock._held[key]
            entry[0].close()
        return False
