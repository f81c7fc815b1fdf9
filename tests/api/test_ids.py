"""Ids from the urandom buffer: unique, 128 bits of hex, and never shared with a forked child."""

from __future__ import annotations

import os

from api.core import ids


def test_ids_are_32_hex_digits_and_never_repeat_across_refills():
    drawn = ids.random_ids(300) + [ids.random_id() for _ in range(300)]  # > 2 buffers
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in drawn)
    assert len(set(drawn)) == len(drawn)
    assert len(ids.random_ids(1000)) == 1000  # larger than a buffer: drawn directly


def test_a_forked_child_does_not_hand_out_its_parents_next_ids():
    ids.random_id()  # the buffer holds bytes the parent has not used yet
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(writer, ids.random_id().encode())
        os._exit(0)  # pylint: disable=protected-access
    os.close(writer)
    os.waitpid(child, 0)
    from_child = os.read(reader, 64).decode()
    os.close(reader)
    assert len(from_child) == 32 and from_child != ids.random_id()
