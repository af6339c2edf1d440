"""A file of numbers that one process updates in place and others read: a worker's counters.

As prometheus_client's multiprocess mode does, the writer maps the file (``mmap``), so an
update is a copy into memory, not a file written: rewriting a JSON file after every tick
cost a worker 0.3-0.4 ms of CPU a tick (issue 27), a tenth of a deployed tick.

Layout: :data:`MAGIC` (8 bytes); the header's length (4 bytes, little-endian); the
header (UTF-8 JSON, the writer's description of the slots); zero padding to a multiple
of 8; the slots, native float64. The file is made whole under a temporary name, every
byte written (a full disk fails there, with an OSError, not later at a store into a page
the disk cannot back), then renamed into place: a reader sees the previous writer's file
or this one's, never a partial header. A reader copies it with one read, which may meet
an update half done: a slot is never torn (an aligned 8-byte value), but two slots of one
update may be seen one update apart.

A file cut short under its mapping would end the writer with SIGBUS at its next store:
:meth:`SlotFile.intact` is asked before each update (a file is cut only by hand).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
from array import array
from pathlib import Path
from typing import Any

MAGIC = b"MRSLOTS1"
_LENGTH = struct.Struct("<I")
MAX_HEADER = 1 << 20  # a header longer than this is not one of ours


def _offset(header_len: int) -> int:
    """Where the slots start: after magic, length and header, aligned to 8."""
    end = len(MAGIC) + _LENGTH.size + header_len
    return -(-end // 8) * 8


class SlotFile:
    """``path`` made anew with ``header`` and ``values``, mapped, to be updated in place
    with :meth:`store`. Raises OSError (0600, as every state file). On a file system
    that cannot map files (some FUSE ones), each :meth:`store` makes the file anew,
    whole, as a JSON state file is written: slower, never wrong."""

    def __init__(self, path: Path, header: dict[str, Any], values: array[float]) -> None:
        encoded = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        start = MAGIC + _LENGTH.pack(len(encoded)) + encoded
        self.path = path
        self._head = start + bytes(_offset(len(encoded)) - len(start))
        self.size = len(self._head) + 8 * len(values)
        # the descriptor is kept open: its size tells whether the file was cut
        self._fd, self._map = _made(path, self._head + values.tobytes(), mapped=True)
        self._inode = os.fstat(self._fd).st_ino
        self._slots = None
        if self._map is not None:
            self._slots = memoryview(self._map)[len(self._head) :].cast("d")

    @property
    def mapped(self) -> bool:
        return self._slots is not None

    def intact(self) -> bool:
        """Whether ``path`` still names this file, whole (not removed, replaced or cut)."""
        try:
            return (
                os.stat(self.path).st_ino == self._inode and os.fstat(self._fd).st_size >= self.size
            )
        except OSError:
            return False

    def store(self, values: array[float]) -> None:
        """Every slot set to ``values`` (as many): one copy into the mapping (unmapped:
        the file made anew, which raises OSError)."""
        if self._slots is not None:
            self._slots[:] = memoryview(values)
            return
        fd, _ = _made(self.path, self._head + values.tobytes(), mapped=False)
        os.close(self._fd)
        self._fd, self._inode = fd, os.fstat(fd).st_ino

    def close(self) -> None:
        """Unmap it (a file cut short must not be touched again) and close it."""
        if self._slots is not None:
            self._slots.release()
        if self._map is not None:
            self._map.close()
        os.close(self._fd)


def _made(path: Path, data: bytes, *, mapped: bool) -> tuple[int, mmap.mmap | None]:
    """``data`` written whole under a temporary name, mapped (when asked, and where the
    file system can), then renamed to ``path``: its open descriptor, and its mapping."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    mapping = None
    try:
        written = os.write(fd, data)
        if written != len(data):  # a short write: the disk is full
            raise OSError(f"{path}: wrote {written} of {len(data)} bytes")
        if mapped:
            with contextlib.suppress(OSError):  # ENODEV: this file system maps no file
                mapping = mmap.mmap(fd, len(data))
        os.replace(temporary, path)
    except BaseException:
        if mapping is not None:
            mapping.close()
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return fd, mapping


def parse(raw: bytes) -> tuple[bytes, array[float]] | None:
    """A slot file's header (its JSON, as written: the same for every file of one layout,
    so a reader can keep what it made of it) and its slots, from the file's bytes; None
    when they are not a slot file's."""
    start = len(MAGIC) + _LENGTH.size
    if len(raw) < start or not raw.startswith(MAGIC):
        return None
    (header_len,) = _LENGTH.unpack_from(raw, len(MAGIC))
    offset = _offset(header_len)
    if header_len > MAX_HEADER or offset > len(raw) or (len(raw) - offset) % 8:
        return None
    slots = array("d")
    slots.frombytes(raw[offset:])
    return raw[start : start + header_len], slots
