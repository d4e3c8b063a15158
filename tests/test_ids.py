"""LSST id packing: known values from lsst_schema.md section 3.4 and round trips."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from skydp import ids


def test_visit_id_format():
    assert ids.make_visit_id(20260324, 12) == 2026032400012
    assert ids.split_visit_id(2026032400012) == (20260324, 12)


def test_visit_detector_packing_matches_rubin_formula():
    visit, detector = 2026032400012, 94
    days = datetime.date(2026, 3, 24).toordinal() - datetime.date(2010, 1, 1).toordinal()
    expected = detector + 256 * (12 + 32768 * days)
    assert ids.pack_visit_detector(visit, detector) == expected
    assert expected < 2**38
    assert ids.unpack_visit_detector(expected) == (visit, detector)


def test_source_id_round_trip_and_vectorised():
    visit, detector = 2025120100345, 188
    sid = ids.source_id(visit, detector, 7)
    assert sid == (ids.pack_visit_detector(visit, detector) << 19) | 7
    assert ids.unpack_source_id(sid) == (visit, detector, 7)
    many = ids.source_id(visit, detector, np.arange(1, 1001))
    assert many.dtype == np.int64 and len(np.unique(many)) == 1000
    assert all(ids.unpack_source_id(s)[2] == n for s, n in zip(many[::97], range(1, 1001, 97)))
    assert int(many.max()) < 2**63


def test_dp1_dia_object_id_decodes_to_its_tract():
    # DP1 diaObjectId from the LSDB tutorial: tract 4848 (lsst_schema.md 3.4), release 4, counter 50.
    tract, patch, n, release = ids.unpack_object_id(609782208097419314)
    assert (tract, n, release) == (4848, 50, 4)
    assert ids.object_id(tract, patch, n, release=release) == 609782208097419314


@pytest.mark.parametrize(
    "call",
    [
        lambda: ids.pack_visit_detector(2026032400012, 256),
        lambda: ids.pack_visit_detector(2026132400012, 1),
        lambda: ids.make_visit_id(20260324, 40000),
        lambda: ids.source_id(2026032400012, 1, 2**19),
        lambda: ids.object_id(18938, 0, 1),
    ],
)
def test_out_of_range_raises_value_error(call):
    with pytest.raises(ValueError):
        call()
