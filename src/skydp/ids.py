"""LSST-compatible 64-bit id packing (lsst_schema.md section 3.4).

Record ids follow ``lsst.meas.base.IdGenerator``: a catalog id (a packed data id plus
``2**max_bits * release``) shifted left by the counter bits, OR-ed with a per-catalog counter
``n = 1, 2, ...``.  Six release bits and the sign bit are reserved, so
``counter_bits = 63 - 6 - max_bits``.

* Visit + detector (``RubinDimensionPacker``): ``detector + 256 * (seq_num + 32768 *
  (dayOrdinal(day_obs) - dayOrdinal(20100101)))``; 38 bits, counter 19 bits.
  Used for ``ccdVisitId``, ``sourceId`` and ``diaSourceId``.
* Sky map (``SkyMapDimensionPacker``): ``patch + n_patches * tract``; with the
  ``lsst_cells_v1`` sizes (18938 tracts, 10 x 10 patches) 21 bits, counter 36 bits.
  Used for ``objectId``.

Visit ids follow LSST: ``visit = int(f"{day_obs}{seq_num:05d}")``.
"""

from __future__ import annotations

import datetime

import numpy as np

RELEASE_BITS = 6
N_DETECTORS = 256
N_SEQ_NUMS = 32768
N_DAYS = 16384
VISIT_DETECTOR_BITS = 38  # 8 detector + 15 seq_num + 14 day + 1 visit-definition bit
SOURCE_COUNTER_BITS = 63 - RELEASE_BITS - VISIT_DETECTOR_BITS  # 19
_EPOCH_ORDINAL = datetime.date(2010, 1, 1).toordinal()

N_TRACTS = 18938
N_PATCHES = 100
SKYMAP_BITS = int(np.ceil(np.log2(N_TRACTS * N_PATCHES)))  # 21
OBJECT_COUNTER_BITS = 63 - RELEASE_BITS - SKYMAP_BITS  # 36


def make_visit_id(day_obs: int, seq_num: int) -> int:
    """LSST visit id ``int(f"{day_obs}{seq_num:05d}")``, e.g. (20260324, 12) -> 2026032400012."""
    _check_day_obs(day_obs)
    if not 0 <= seq_num < N_SEQ_NUMS:
        raise ValueError(f"seq_num={seq_num} outside [0, {N_SEQ_NUMS})")
    return int(f"{day_obs}{seq_num:05d}")


def split_visit_id(visit: int) -> tuple[int, int]:
    """(day_obs, seq_num) of an LSST visit id."""
    day_obs, seq_num = divmod(int(visit), 100000)
    _check_day_obs(day_obs)
    if seq_num >= N_SEQ_NUMS:
        raise ValueError(f"visit={visit}: seq_num {seq_num} does not fit the 15-bit packer field")
    return day_obs, seq_num


def pack_visit_detector(visit: int, detector: int) -> int:
    """Packed visit+detector id (``ccdVisitId``), as ``RubinDimensionPacker`` with release 0."""
    if not 0 <= detector < N_DETECTORS:
        raise ValueError(f"detector={detector} outside [0, {N_DETECTORS})")
    day_obs, seq_num = split_visit_id(visit)
    days = _day_ordinal(day_obs) - _EPOCH_ORDINAL
    if not 0 <= days < N_DAYS:
        raise ValueError(f"visit={visit}: day_obs {day_obs} outside the packer's 2010-2054 range")
    return int(detector) + N_DETECTORS * (seq_num + N_SEQ_NUMS * days)


def unpack_visit_detector(packed: int) -> tuple[int, int]:
    """(visit, detector) of a packed visit+detector id (release bits ignored)."""
    packed = int(packed) & ((1 << VISIT_DETECTOR_BITS) - 1)
    detector = packed % N_DETECTORS
    rest = packed // N_DETECTORS
    seq_num = rest % N_SEQ_NUMS
    days = (rest // N_SEQ_NUMS) % N_DAYS
    day = datetime.date.fromordinal(_EPOCH_ORDINAL + days)
    return make_visit_id(int(day.strftime("%Y%m%d")), seq_num), detector


def source_id(visit: int, detector: int, n: int | np.ndarray, release: int = 0) -> int | np.ndarray:
    """``sourceId`` for counter value(s) ``n`` (1-based; vectorised over ``n``)."""
    catalog = pack_visit_detector(visit, detector) + (_check_release(release) << VISIT_DETECTOR_BITS)
    return _compose(catalog, n, SOURCE_COUNTER_BITS)


def unpack_source_id(sid: int) -> tuple[int, int, int]:
    """(visit, detector, n) of a ``sourceId``."""
    sid = int(sid)
    visit, detector = unpack_visit_detector(sid >> SOURCE_COUNTER_BITS)
    return visit, detector, sid & ((1 << SOURCE_COUNTER_BITS) - 1)


def object_id(tract: int, patch: int, n: int | np.ndarray, release: int = 0) -> int | np.ndarray:
    """``objectId`` for a tract/patch and counter value(s) ``n`` (lsst_cells_v1 sizes)."""
    if not 0 <= tract < N_TRACTS:
        raise ValueError(f"tract={tract} outside [0, {N_TRACTS})")
    if not 0 <= patch < N_PATCHES:
        raise ValueError(f"patch={patch} outside [0, {N_PATCHES})")
    catalog = patch + N_PATCHES * tract + (_check_release(release) << SKYMAP_BITS)
    return _compose(catalog, n, OBJECT_COUNTER_BITS)


def unpack_object_id(oid: int) -> tuple[int, int, int, int]:
    """(tract, patch, n, release) of an ``objectId``."""
    oid = int(oid)
    catalog = oid >> OBJECT_COUNTER_BITS
    release, packed = divmod(catalog, 1 << SKYMAP_BITS)
    tract, patch = divmod(packed, N_PATCHES)
    return tract, patch, oid & ((1 << OBJECT_COUNTER_BITS) - 1), release


def _compose(catalog: int, n: int | np.ndarray, counter_bits: int) -> int | np.ndarray:
    n_arr = np.asarray(n, dtype=np.int64)
    if np.any(n_arr < 0) or np.any(n_arr >= (1 << counter_bits)):
        raise ValueError(f"counter n must be in [0, 2**{counter_bits})")
    ids = (np.int64(catalog) << np.int64(counter_bits)) | n_arr
    return int(ids) if n_arr.ndim == 0 else ids


def _check_release(release: int) -> int:
    if not 0 <= release < (1 << RELEASE_BITS):
        raise ValueError(f"release={release} outside [0, {1 << RELEASE_BITS})")
    return int(release)


def _check_day_obs(day_obs: int) -> None:
    try:
        datetime.datetime.strptime(str(int(day_obs)), "%Y%m%d")
    except ValueError as exc:
        raise ValueError(f"day_obs={day_obs} is not a YYYYMMDD date") from exc


def _day_ordinal(day_obs: int) -> int:
    return datetime.datetime.strptime(str(int(day_obs)), "%Y%m%d").date().toordinal()
