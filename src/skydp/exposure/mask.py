"""Integer mask with named bit planes (afw-compatible ``MP_<NAME>=<bit>`` convention)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

DEFAULT_MASK_PLANES: dict[str, int] = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
}

_MAX_BIT = 31  # int32 holds bits 0..31
_PLANE_NAME = re.compile(r"^[A-Z0-9_]+$")  # written as FITS keywords MP_<NAME>


def _plane_key(name: str) -> str:
    key = str(name).upper()
    if not _PLANE_NAME.match(key):
        raise ValueError(f"mask plane name {name!r} must contain only letters, digits and '_'")
    return key


@dataclass(eq=False)  # arrays inside: compare fields explicitly
class Mask:
    """int32 bit planes (ny, nx) and the plane name -> bit map.

    Files from other pipelines may use other bits for the same names (HSC has NO_DATA at 9), so
    code must always look bits up by name (``bitmask``/``get``), never hard-code them.
    """

    array: np.ndarray
    planes: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MASK_PLANES))

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 2:
            raise ValueError(f"mask array must be 2-D, got shape {array.shape}")
        if array.dtype == np.uint32:
            array = array.view(np.int32)  # bit 31 becomes the sign bit, the bits are unchanged
        elif array.dtype != np.int32:
            info = np.iinfo(np.int32)
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"mask array must be integer, got {array.dtype}")
            if array.size and (array.min() < info.min or array.max() > info.max):
                raise ValueError("mask values do not fit in int32")
            array = array.astype(np.int32)
        self.array = array
        planes = {_plane_key(name): int(bit) for name, bit in dict(self.planes).items()}
        bad = {name: bit for name, bit in planes.items() if not 0 <= bit <= _MAX_BIT}
        if bad:
            raise ValueError(f"mask plane bits must be in 0..{_MAX_BIT}: {bad}")
        if len(set(planes.values())) != len(planes):
            raise ValueError(f"two mask planes share a bit: {planes}")
        self.planes = planes

    @classmethod
    def empty(cls, shape: tuple[int, int], planes: dict[str, int] | None = None) -> "Mask":
        """All-zero mask; planes default to ``DEFAULT_MASK_PLANES``."""
        return cls(np.zeros(shape, dtype=np.int32), dict(DEFAULT_MASK_PLANES if planes is None else planes))

    def add_plane(self, name: str) -> int:
        """Return the bit of plane ``name``, adding it at the lowest free bit if it is new."""
        key = _plane_key(name)
        if key in self.planes:
            return self.planes[key]
        used = set(self.planes.values())
        free = [bit for bit in range(_MAX_BIT + 1) if bit not in used]
        if not free:
            raise ValueError(f"cannot add mask plane {name!r}: all {_MAX_BIT + 1} bits are in use")
        self.planes[key] = free[0]
        return free[0]

    def bitmask(self, *names: str) -> int:
        """OR of ``1 << bit`` over the named planes, as a signed int32-compatible int."""
        value = 0
        for name in names:
            key = name.upper()
            if key not in self.planes:
                raise KeyError(f"unknown mask plane {name!r}; planes are {sorted(self.planes)}")
            value |= 1 << self.planes[key]
        return int(np.array(value, dtype=np.uint32).view(np.int32))

    def get(self, name: str) -> np.ndarray:
        """Boolean array: where plane ``name`` is set."""
        return (self.array & self.bitmask(name)) != 0

    def set(self, name: str, where: np.ndarray) -> None:
        """Set plane ``name`` (added if new) where ``where`` is true; other bits are kept."""
        where = np.asarray(where, dtype=bool)
        if where.shape != self.array.shape:
            raise ValueError(f"mask plane {name!r}: 'where' has shape {where.shape}, mask is {self.array.shape}")
        self.add_plane(name)
        self.array[where] |= np.int32(self.bitmask(name))

    def copy(self) -> "Mask":
        return Mask(self.array.copy(), dict(self.planes))
