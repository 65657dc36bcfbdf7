"""partition_for implements the FNV-1a 64 hash documented in the proto."""

import pytest

from eventhub import fnv1a_64, partition_for


def test_documented_values() -> None:
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


def test_partition_is_the_hash_modulo_the_count() -> None:
    assert partition_for("a", 1) == 0
    assert partition_for("a", 7) == 0xAF63DC4C8601EC8C % 7
    assert partition_for("é", 1024) == fnv1a_64("é".encode()) % 1024
    with pytest.raises(ValueError):
        partition_for("a", 0)
