"""The partition a key's events land in (see the proto's file comment)."""

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1


def fnv1a_64(data: bytes) -> int:
    """64-bit FNV-1a of ``data``."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _MASK
    return h


def partition_for(key: str, partition_count: int) -> int:
    """The partition of ``key`` in a topic of ``partition_count`` partitions."""
    if partition_count < 1:
        raise ValueError(f"partition_count must be at least 1, got {partition_count}")
    return fnv1a_64(key.encode("utf-8")) % partition_count
