"""Random ids (prediction and request ids) drawn from a buffer of ``os.urandom``.

One ``getrandom`` call per 4 KiB instead of one per request: each call releases the GIL, and a
request thread then waits for the worker's other threads (the history writer, the shadow
scorer) to hand it back. The bytes are the kernel's, as ``uuid.uuid4`` uses; a forked child
starts with an empty buffer, so no two processes hand out the same id.
"""

from __future__ import annotations

import os
import threading

#: Bytes drawn from the kernel at a time (256 ids of 16 bytes).
POOL_BYTES = 4096
ID_BYTES = 16


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0

    def take(self, size: int) -> bytes:
        """``size`` random bytes, never handed out before."""
        if size > POOL_BYTES:
            return os.urandom(size)
        with self._lock:
            if self._offset + size > len(self._buffer):
                self._buffer, self._offset = os.urandom(POOL_BYTES), 0
            start = self._offset
            self._offset += size
            return self._buffer[start : self._offset]

    def forget(self) -> None:
        """In a forked child: drop the parent's bytes (and a lock another thread may hold)."""
        self._lock = threading.Lock()
        self._buffer, self._offset = b"", 0


_POOL = _Pool()
os.register_at_fork(after_in_child=_POOL.forget)


def random_ids(count: int) -> list[str]:
    """``count`` ids of 32 hexadecimal digits (128 random bits each, as uuid4's hex)."""
    entropy = _POOL.take(ID_BYTES * count).hex()
    return [entropy[start : start + 32] for start in range(0, 32 * count, 32)]


def random_id() -> str:
    """One id of 32 hexadecimal digits."""
    return _POOL.take(ID_BYTES).hex()
