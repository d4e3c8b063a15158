"""Alert packets: schema validity, Avro round trip, and cutouts that the reader of the real
LSSTCam alerts (fastavro + skydp.exposure.read_exposure) decodes like the real ones."""

from __future__ import annotations

import io

import fastavro
import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from conftest import shared_data
from skydp import tables
from skydp.alerts import (
    ALERT_SCHEMA_VERSION, CUTOUT_SIZE, alert_schema, cutout_fits, read_alerts, validate_alert, visit_alerts,
    write_alerts,
)
from skydp.association import associate
from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo, read_exposure
from skydp.sim.wcs import detector_wcs, radial_distortion_coefficient
from test_association import dia_source_table

REAL_ALERTS = ("rubin_lsstcam_alerts_20260305", "fink_client_lsst_part-2-918301.avro")
SHAPE = (260, 300)  # (ny, nx)
XY0 = (1000, 2000)
NOISE = 50.0  # nJy per pixel
PSF_SIGMA = 1.8  # pixels


def gaussian_psf(size: int = 25) -> PixelPsf:
    r = np.arange(size) - size // 2
    stamp = np.exp(-(r[None, :] ** 2 + r[:, None] ** 2) / (2 * PSF_SIGMA**2))
    xs = XY0[0] + np.array([0.0, SHAPE[1] - 1.0])
    ys = XY0[1] + np.array([0.0, SHAPE[0] - 1.0])
    gx, gy = np.meshgrid(xs, ys)
    return PixelPsf(np.repeat(stamp[None], 4, axis=0), gx.ravel(), gy.ravel())


def make_exposure(image: np.ndarray, band: str = "r") -> Exposure:
    # a detector far from the boresight, so the TAN-SIP distortion matters at the cutout
    wcs = detector_wcs(53.1, -28.1, 30.0, (4000.0, -3000.0), (SHAPE[1], SHAPE[0]),
                       radial_distortion_coefficient(5.0, 8000.0))
    wcs.wcs.crpix = wcs.wcs.crpix - np.array(XY0)  # WCS of the array frame of a parent box at XY0
    info = VisitInfo(instrument="LSSTCam-sim", visit=2026111500012, detector=0, band=band, day_obs=20261115,
                     mjd=61000.1, exptime=30.0, rotpa=30.0)
    return Exposure(image=image, variance=np.full(SHAPE, NOISE**2), mask=Mask.empty(SHAPE), wcs=wcs,
                    psf=gaussian_psf(), xy0=XY0, info=info)


def add_point_source(image: np.ndarray, psf: PixelPsf, x: float, y: float, flux: float) -> None:
    stamp = psf.image_at(x, y)
    h = stamp.shape[0] // 2
    c, r = int(round(x)) - XY0[0], int(round(y)) - XY0[1]
    image[r - h:r + h + 1, c - h:c + h + 1] += flux * stamp


def psf_fit_flux(exposure: Exposure, ra: float, dec: float) -> tuple[float, float]:
    """Linear PSF-amplitude fit at the sky position, inverse-variance weighted (finite pixels)."""
    x, y = (float(v[0]) for v in exposure.sky_to_pixel(np.array([ra]), np.array([dec])))
    stamp = exposure.psf.image_at(x, y)
    h = stamp.shape[0] // 2
    col, row = int(round(x)) - exposure.xy0[0], int(round(y)) - exposure.xy0[1]
    ny, nx = exposure.shape
    r0, r1, c0, c1 = max(row - h, 0), min(row + h + 1, ny), max(col - h, 0), min(col + h + 1, nx)
    p = stamp[r0 - (row - h):r1 - (row - h), c0 - (col - h):c1 - (col - h)]
    d = exposure.image[r0:r1, c0:c1].astype(float)
    v = exposure.variance[r0:r1, c0:c1].astype(float)
    ok = np.isfinite(d) & np.isfinite(v) & (v > 0)
    w = p[ok] ** 2 / v[ok]
    return float(np.sum(p[ok] * d[ok] / v[ok]) / w.sum()), float(np.sqrt(1 / w.sum()))


@pytest.fixture(scope="module")
def scene():
    """Science, template and difference images with one transient, and its DiaSource history."""
    rng = np.random.default_rng(4)
    psf = gaussian_psf()
    x, y, flux = XY0[0] + 151.3, XY0[1] + 97.8, 6000.0
    diff = rng.normal(0, NOISE, SHAPE).astype(np.float32)
    add_point_source(diff, psf, x, y, flux)
    static = np.zeros(SHAPE)
    add_point_source(static, psf, x + 0.4, y - 0.3, 20000.0)  # the host
    science, template = make_exposure(diff + static), make_exposure(static + rng.normal(0, NOISE / 3, SHAPE))
    difference = make_exposure(diff)
    ra, dec = (float(v[0]) for v in difference.pixel_to_sky(np.array([x]), np.array([y])))
    mjds = np.array([60600.0, 60990.0, 60995.0, 60998.0, 61000.1])  # the first is > 365 d before
    visits = [2024102000010, 2026110500010, 2026111000010, 2026111300010, 2026111500012]
    offsets = rng.normal(0, 0.05, (mjds.size, 2)) / 3600
    sources = pa.concat_tables([
        dia_source_table([ra + offsets[k, 0]], dec + offsets[k, 1], visits[k], mjds[k], "r",
                         psf_flux=np.array([flux * (0.5 + 0.1 * k)]), psf_err=np.array([300.0]))
        for k in range(mjds.size)
    ])
    sources = sources.set_column(sources.column_names.index("x"), "x", pa.array([x] * mjds.size))
    sources = sources.set_column(sources.column_names.index("y"), "y", pa.array([y] * mjds.size))
    assoc = associate(sources)
    (oid,) = set(assoc.dia_sources.column("diaObjectId").to_pylist())
    forced = tables.to_arrow("ForcedSourceOnDiaObject", {
        "forcedSourceOnDiaObjectId": np.arange(1, 5), "diaObjectId": np.full(4, oid),
        "coord_ra": np.full(4, ra), "coord_dec": np.full(4, dec), "visit": visits[:4],
        "detector": np.zeros(4, np.int32), "band": ["r"] * 4, "psfFlux": [21000.0, 22000, 23000, 24000],
        "psfFluxErr": [100.0] * 4, "psfDiffFlux": [10.0, 1000, 2000, 3000], "psfDiffFluxErr": [90.0] * 4,
        "midpointMjdTai": mjds[:4],
    })
    current = assoc.dia_sources.slice(mjds.size - 1)
    history = assoc.dia_sources.slice(0, mjds.size - 1)
    return dict(science=science, template=template, difference=difference, ra=ra, dec=dec, flux=flux,
                current=current, history=history, objects=assoc.dia_objects, forced=forced, x=x, y=y)


@pytest.fixture(scope="module")
def alerts(scene):
    return visit_alerts(scene["current"], scene["objects"], scene["history"], scene["forced"],
                        scene["science"], scene["template"], scene["difference"])


def test_schema_is_the_newest_lsst_alert_packet_version():
    import lsst.alert.packet as packet

    assert ALERT_SCHEMA_VERSION == "{}.{}".format(*packet.get_latest_schema_version())
    assert alert_schema()["name"] == "lsst.v11_1.alert"


def test_alerts_validate_and_round_trip_through_avro(scene, alerts, tmp_path):
    import lsst.alert.packet as packet

    assert len(alerts) == 1
    alert = alerts[0]
    validate_alert(alert)
    # lsst-alert-packet's own validation and its single-packet (Kafka payload) serialisation
    lsst_schema = packet.Schema.from_file()
    assert lsst_schema.validate(alert)
    assert lsst_schema.deserialize(lsst_schema.serialize(alert))["diaSourceId"] == alert["diaSourceId"]
    source = scene["current"].to_pylist()[0]
    assert alert["diaSourceId"] == source["diaSourceId"] == alert["diaSource"]["diaSourceId"]
    assert alert["diaSource"]["diaObjectId"] == alert["diaObject"]["diaObjectId"] == source["diaObjectId"]
    assert alert["diaSource"]["exposureTime"] == 30.0
    assert alert["diaSource"]["timeProcessedMjdTai"] == pytest.approx(61364.0)  # 2026-11-20T00:00 (MJD 61364)
    assert alert["diaObject"]["nDiaSources"] == 5 and alert["diaObject"]["r_psfFluxNdata"] == 5
    # 12 months of history: the 2024 DiaSource and forced source are left out, the DiaSource itself too
    prv_mjd = [r["midpointMjdTai"] for r in alert["prvDiaSources"]]
    assert prv_mjd == [60990.0, 60995.0, 60998.0]
    forced = alert["prvDiaForcedSources"]
    assert [r["diaForcedSourceId"] for r in forced] == [2, 3, 4]
    assert [r["psfFlux"] for r in forced] == [1000.0, 2000.0, 3000.0]  # difference-image flux
    assert [r["scienceFlux"] for r in forced] == [22000.0, 23000.0, 24000.0]

    path = tmp_path / "visit_2026111500012.avro"
    assert write_alerts(path, alerts) == 1
    back = read_alerts(path)
    assert_float32_equal(back[0]["diaSource"], alert["diaSource"])
    assert back[0]["diaObject"]["r_psfFluxMean"] == pytest.approx(alert["diaObject"]["r_psfFluxMean"], rel=1e-6)
    assert back[0]["cutoutDifference"] == alert["cutoutDifference"]
    with open(path, "rb") as fh:
        assert fastavro.reader(fh).writer_schema["name"] == "lsst.v11_1.alert"


def assert_float32_equal(got: dict, expected: dict) -> None:
    """Records equal, Avro float fields compared at float32 precision."""
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key
        else:
            assert got[key] == value, key


def test_invalid_packets_are_refused(alerts, tmp_path):
    bad = dict(alerts[0], diaSource=dict(alerts[0]["diaSource"], midpointMjdTai=None))
    with pytest.raises(ValueError, match="does not fit"):
        validate_alert(bad)
    path = tmp_path / "bad.avro"
    with pytest.raises(ValueError):
        write_alerts(path, [bad])
    assert not path.exists() and not list(tmp_path.iterdir())
    path.write_bytes(b"not an Avro file")
    with pytest.raises(ValueError, match="bad.avro"):
        read_alerts(path)


def test_cutouts_decode_with_the_real_alert_reader(scene, alerts):
    alert = alerts[0]
    for key, image in (("cutoutScience", "science"), ("cutoutTemplate", "template"),
                       ("cutoutDifference", "difference")):
        source = scene[image]
        cut = read_exposure(alert[key])
        assert cut.shape == (CUTOUT_SIZE, CUTOUT_SIZE) and cut.info.bunit == "nJy"
        # parent coordinates: the cutout holds exactly the image pixels, variance and PSF
        x0, y0 = cut.xy0
        c0, r0 = x0 - source.xy0[0], y0 - source.xy0[1]
        np.testing.assert_array_equal(cut.image, source.image[r0:r0 + CUTOUT_SIZE, c0:c0 + CUTOUT_SIZE])
        np.testing.assert_array_equal(cut.variance, source.variance[r0:r0 + CUTOUT_SIZE, c0:c0 + CUTOUT_SIZE])
        np.testing.assert_allclose(cut.psf.image(scene["x"], scene["y"]), source.psf.image(scene["x"], scene["y"]),
                                   atol=1e-12)
        # the WCS maps the DiaSource position to its parent pixel, centred in the stamp
        px, py = (float(v[0]) for v in cut.sky_to_pixel(np.array([scene["ra"]]), np.array([scene["dec"]])))
        assert px == pytest.approx(scene["x"], abs=1e-6) and py == pytest.approx(scene["y"], abs=1e-6)
        assert 14 <= px - x0 <= 15 and 14 <= py - y0 <= 15
        # and agrees with the full TAN-SIP WCS of the image over the whole stamp (local linear WCS)
        gx, gy = np.meshgrid(np.arange(CUTOUT_SIZE) + x0, np.arange(CUTOUT_SIZE) + y0)
        ra_c, dec_c = cut.pixel_to_sky(gx.ravel(), gy.ravel())
        sx, sy = source.sky_to_pixel(ra_c, dec_c)
        assert np.max(np.hypot(sx - gx.ravel(), sy - gy.ravel())) < 0.01
    flux, err = psf_fit_flux(read_exposure(alert["cutoutDifference"]), scene["ra"], scene["dec"])
    assert abs(flux - scene["flux"]) < 4 * err


def test_cutout_layout_matches_the_real_lsstcam_alerts(alerts):
    real = read_alerts(shared_data(*REAL_ALERTS))
    ours = alerts[0]
    for key in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        with fits.open(io.BytesIO(real[0][key])) as r, fits.open(io.BytesIO(ours[key])) as o:
            assert [h.name for h in o] == [h.name for h in r] == ["PRIMARY", "UNCERT", "PSFIMAGE"]
            assert [h.data.dtype.name for h in o] == [h.data.dtype.name for h in r]
            assert o[0].data.shape == r[0].data.shape == (30, 30)
            missing = set(r[0].header) - set(o[0].header)
            assert not missing, missing
            assert o[1].header["UTYPE"] == r[1].header["UTYPE"] == "VarianceUncertainty"
            assert o[0].header["BUNIT"] == "nJy"
            assert o[2].data.sum() == pytest.approx(1.0, abs=1e-9)


def test_packet_fields_match_the_real_lsstcam_alerts(alerts):
    """Our v11.1 records have every field of the real v10.0 ones, plus v11's four new diaSource fields."""
    real = read_alerts(shared_data(*REAL_ALERTS))[0]
    ours = alerts[0]
    lsst_top = {f["name"] for f in alert_schema()["fields"]}
    assert set(ours) == lsst_top and lsst_top <= set(real)  # the broker adds its own fields
    assert set(ours["diaSource"]) - set(real["diaSource"]) == {
        "exposureTime", "reliabilityVersion", "trailAlgorithm", "trail_flag"}
    assert set(real["diaSource"]) <= set(ours["diaSource"])
    assert set(ours["diaObject"]) == set(real["diaObject"])
    assert set(ours["prvDiaSources"][0]) == set(ours["diaSource"])
    assert set(ours["prvDiaForcedSources"][0]) == set(real["prvDiaForcedSources"][0])


def test_real_alert_cutouts_and_ours_read_the_same_way():
    """The reader used on our cutouts measures the real ones too: PSF flux on the real difference
    cutouts at the DiaSource position agrees with the pipeline's psfFlux (median ratio ~1)."""
    real = read_alerts(shared_data(*REAL_ALERTS))
    ratios = []
    for alert in real:
        src = alert["diaSource"]
        cut = read_exposure(alert["cutoutDifference"])
        px, py = (float(v[0]) for v in cut.sky_to_pixel(np.array([src["ra"]]), np.array([src["dec"]])))
        assert px == pytest.approx(src["x"], abs=0.02) and py == pytest.approx(src["y"], abs=0.02)
        ratios.append(psf_fit_flux(cut, src["ra"], src["dec"])[0] / src["psfFlux"])
    assert 0.97 < np.median(ratios) < 1.03


def test_cutout_off_the_image_edge_is_padded_with_nan(scene):
    diff = scene["difference"]
    ra, dec = (float(v[0]) for v in diff.pixel_to_sky(np.array([XY0[0] + 3.2]), np.array([XY0[1] + 100.0])))
    with fits.open(io.BytesIO(cutout_fits(diff, ra, dec))) as hdul:
        data = hdul[0].data
        x0 = hdul[0].header["CUTMINX"] + 1
        assert x0 < XY0[0]
        assert np.isnan(data[:, : XY0[0] - x0]).all() and np.isfinite(data[:, XY0[0] - x0:]).all()
        wcs = WCS(hdul[0].header)
        cx, cy = wcs.world_to_pixel_values(ra, dec)
        assert cx + x0 == pytest.approx(XY0[0] + 3.2, abs=1e-6)


def test_bad_packets_are_refused_naming_the_field(alerts, tmp_path):
    """Fields outside unions (checked before writing) and inside them (checked by the writer)."""
    alert = alerts[0]
    cases = {
        "lsst.v11_1.diaSource.visit": dict(alert, diaSource=dict(alert["diaSource"], visit=1.5)),
        "lsst.v11_1.diaSource.detector": dict(alert, diaSource=dict(alert["diaSource"], detector=2**40)),
        "lsst.v11_1.diaSource.psfFlux": dict(alert, prvDiaSources=[dict(alert["prvDiaSources"][0], psfFlux="x")]),
        "lsst.v11_1.diaObject.nDiaSources": dict(alert, diaObject=dict(alert["diaObject"], nDiaSources=2.5)),
    }
    for field, bad in cases.items():
        with pytest.raises(ValueError, match=f"alert {alert['diaSourceId']} does not fit .*{field}"):
            validate_alert(bad)
        path = tmp_path / "bad.avro"
        with pytest.raises(ValueError, match=field):
            write_alerts(path, [alert, bad])
        assert not list(tmp_path.iterdir())


def test_template_without_rotation_angle_gives_cutouts_without_rotpa(scene):
    """A coadd template has no rotator angle (NaN): the card is left out and reads back as NaN."""
    template = scene["template"].copy()
    template.info.rotpa = float("nan")
    data = cutout_fits(template, scene["ra"], scene["dec"])
    with fits.open(io.BytesIO(data)) as hdul:
        hdul.verify("exception")
        assert "ROTPA" not in hdul[0].header and hdul[0].header["BUNIT"] == "nJy"
    cut = read_exposure(data)
    assert np.isnan(cut.info.rotpa)
    np.testing.assert_array_equal(cut.image, read_exposure(cutout_fits(scene["template"], scene["ra"], scene["dec"])).image)


def test_cutout_fits_bytes_are_standard_and_exact(scene):
    """astropy reads our directly written FITS without complaint; pixels and WCS numbers are exact."""
    diff = scene["difference"]
    data = cutout_fits(diff, scene["ra"], scene["dec"])
    assert len(data) % 2880 == 0
    with fits.open(io.BytesIO(data)) as hdul:
        hdul.verify("exception")
        header = hdul[0].header
        assert header["CRVAL1"] == scene["ra"] and header["CRVAL2"] == scene["dec"]  # repr fits 20 columns
        assert header["ROTPA"] == 30.0
        x0, y0 = header["CUTMINX"] + 1, header["CUTMINY"] + 1
        x, y = (float(v[0]) for v in diff.sky_to_pixel(np.array([scene["ra"]]), np.array([scene["dec"]])))
        assert header["CRPIX1"] == pytest.approx(x - x0 + 1, abs=1e-12)
        assert header["CRPIX2"] == pytest.approx(y - y0 + 1, abs=1e-12)
        c0, r0 = x0 - diff.xy0[0], y0 - diff.xy0[1]
        np.testing.assert_array_equal(hdul[0].data, diff.image[r0:r0 + CUTOUT_SIZE, c0:c0 + CUTOUT_SIZE])
        assert hdul["PSFIMAGE"].data.dtype == np.dtype(">f8")
