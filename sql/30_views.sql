-- Views that join catalog rows back to their images and light-curve views.
-- AB magnitudes from nJy: m = 31.4 - 2.5 log10(f); sigma_m = 2.5/ln(10) * sigma_f / f (f > 0 only).
CREATE OR REPLACE MACRO ab_mag(flux) AS CASE WHEN flux > 0 THEN 31.4 - 2.5 * log10(flux) END;
CREATE OR REPLACE MACRO ab_mag_err(flux, flux_err) AS
    CASE WHEN flux > 0 THEN 2.5 / ln(10) * flux_err / flux END;

-- Every Source with its CcdVisit, its Visit and the file of its calibrated visit image.
CREATE OR REPLACE VIEW SourceImage AS
SELECT s.*,
       cv.ccdVisitId, cv.seeing, cv.zeroPoint, cv.magLim, cv.pixelScale,
       v.expMidptMJD, v.airmass, v.expTime,
       im.path AS visit_image_path, im.imageId
FROM Source s
LEFT JOIN CcdVisit cv ON cv.visitId = s.visit AND cv.detector = s.detector
LEFT JOIN Visit v ON v.visit = s.visit
LEFT JOIN ImageMetadata im
       ON im.dataset_type = 'visit_image' AND im.visit = s.visit AND im.detector = s.detector;

-- Forced photometry light curves of Objects: MJD (TAI) and AB magnitudes, direct and difference.
CREATE OR REPLACE VIEW ObjectLightCurve AS
SELECT objectId, visit, detector, band, midpointMjdTai AS mjd,
       psfFlux, psfFluxErr, ab_mag(psfFlux) AS psfMag, ab_mag_err(psfFlux, psfFluxErr) AS psfMagErr,
       psfDiffFlux, psfDiffFluxErr
FROM ForcedSource;

-- Difference-image detections of DiaObjects.
CREATE OR REPLACE VIEW DiaObjectLightCurve AS
SELECT diaObjectId, diaSourceId, visit, detector, band, midpointMjdTai AS mjd,
       psfFlux, psfFluxErr, ab_mag(psfFlux) AS psfMag, ab_mag_err(psfFlux, psfFluxErr) AS psfMagErr,
       scienceFlux, scienceFluxErr, ab_mag(scienceFlux) AS scienceMag
FROM DiaSource;

-- Forced photometry at DiaObject positions (detections and non-detections).
CREATE OR REPLACE VIEW DiaObjectForcedLightCurve AS
SELECT diaObjectId, visit, detector, band, midpointMjdTai AS mjd,
       psfFlux, psfFluxErr, ab_mag(psfFlux) AS psfMag, ab_mag_err(psfFlux, psfFluxErr) AS psfMagErr,
       psfDiffFlux, psfDiffFluxErr
FROM ForcedSourceOnDiaObject;
