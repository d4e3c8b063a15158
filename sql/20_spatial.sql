-- Spatial macros: angular separation, cone predicate and table macro, nearest-neighbour cross-match.
-- Angles in degrees.  Tables name their position columns through _skydp_ra_col/_skydp_dec_col
-- (generated from skydp's schema when the database is built).

-- Vincenty's formula (atan2 of the cross- and dot-product magnitudes): accurate from
-- micro-arcseconds up to 180 deg, unlike the haversine (loses precision near 180 deg) or the
-- cosine law (loses it below ~1 arcsec).
CREATE OR REPLACE MACRO ang_sep(ra1, dec1, ra2, dec2) AS
    degrees(atan2(
        sqrt(pow(cos(radians(dec2)) * sin(radians(ra2 - ra1)), 2)
             + pow(cos(radians(dec1)) * sin(radians(dec2))
                   - sin(radians(dec1)) * cos(radians(dec2)) * cos(radians(ra2 - ra1)), 2)),
        sin(radians(dec1)) * sin(radians(dec2))
            + cos(radians(dec1)) * cos(radians(dec2)) * cos(radians(ra2 - ra1))));

-- (ra, dec) within radius of (ra0, dec0); the declination band first, so Parquet statistics and
-- cheap comparisons discard most rows before the exact distance.
CREATE OR REPLACE MACRO in_cone(ra, dec, ra0, dec0, radius) AS
    dec BETWEEN dec0 - radius AND dec0 + radius AND ang_sep(ra, dec, ra0, dec0) <= radius;

-- Order-7 HEALPix cells (precomputed centre and bounding radius, _skydp_cells) that touch a cone.
CREATE OR REPLACE MACRO _skydp_cone_cells(ra0, dec0, radius) AS TABLE
    SELECT pix FROM _skydp_cells
    WHERE dec BETWEEN dec0 - radius - 1 AND dec0 + radius + 1
      AND ang_sep(ra, dec, ra0, dec0) <= radius + rad;

-- Rows of a HATS table within radius of (ra0, dec0).  Pruning: the partitions (Norder, Npix) that
-- intersect the cone's cells become a semi-join, which DuckDB turns into a file filter, and the
-- cells' order-29 range becomes a _healpix_29 filter on row-group statistics; then the exact cut.
CREATE OR REPLACE MACRO cone(tbl, ra0, dec0, radius) AS TABLE
    WITH cells AS (FROM _skydp_cone_cells(ra0, dec0, radius)),
    parts AS (
        SELECT DISTINCT p.Npix FROM _skydp_partitions p, cells c
        WHERE p.table_name = tbl
          AND ((p.Norder <= 7 AND (c.pix >> (2 * (7 - p.Norder))) = p.Npix)
            OR (p.Norder > 7 AND (p.Npix >> (2 * (p.Norder - 7))) = c.pix)))
    SELECT * EXCLUDE (Norder, Dir, Npix, _cone_ra, _cone_dec) FROM (
        SELECT *, COLUMNS(lambda c: c = _skydp_ra_col(tbl)) AS _cone_ra,
               COLUMNS(lambda c: c = _skydp_dec_col(tbl)) AS _cone_dec
        FROM query_table(tbl)
        WHERE Npix IN (SELECT Npix FROM parts)
          AND _healpix_29 BETWEEN (SELECT min(pix) << 44 FROM cells)
                              AND (SELECT ((max(pix) + 1) << 44) - 1 FROM cells))
    WHERE in_cone(_cone_ra, _cone_dec, ra0, dec0, radius);

-- Zones for the cross-match: declination strips of height h = radius, each cut into n RA buckets
-- at least radius/cos(dec) wide over the strip and its two neighbours (one bucket near the poles).
CREATE OR REPLACE MACRO _xm_zone(dec, h) AS floor((dec + 90) / h)::BIGINT;
CREATE OR REPLACE MACRO _xm_nbuckets(zone, h) AS
    greatest(1, floor(360 * cos(radians(least(90, greatest(abs(zone * h - 90), abs((zone + 1) * h - 90)) + h))) / h))::BIGINT;
CREATE OR REPLACE MACRO _xm_bucket(ra, n) AS (floor(ra / (360 / n))::BIGINT % n + n) % n;

-- Nearest neighbour in `right` of every row of `left` within radius (deg): left row number
-- (_left_row, 0-based in left's order), the matched right row as struct `match` and the separation
-- `sep` in degrees.  Left rows without a neighbour within radius do not appear.
CREATE OR REPLACE MACRO xmatch(left_tbl, right_tbl, radius) AS TABLE
    WITH l AS (
        SELECT row_number() OVER () - 1 AS _left_row,
               COLUMNS(lambda c: c = _skydp_ra_col(left_tbl)) AS _ra,
               COLUMNS(lambda c: c = _skydp_dec_col(left_tbl)) AS _dec
        FROM query_table(left_tbl)),
    r AS (
        SELECT t AS match, COLUMNS(lambda c: c = _skydp_ra_col(right_tbl)) AS _ra,
               COLUMNS(lambda c: c = _skydp_dec_col(right_tbl)) AS _dec
        FROM query_table(right_tbl) t),
    rk AS (SELECT *, _xm_zone(_dec, radius) AS _z,
                  _xm_bucket(_ra, _xm_nbuckets(_xm_zone(_dec, radius), radius)) AS _b FROM r),
    lk AS (
        SELECT l.*, _xm_zone(l._dec, radius) + dz AS _z, db
        FROM l, (SELECT unnest([-1, 0, 1]) AS dz), (SELECT unnest([-1, 0, 1]) AS db)),
    lb AS (
        SELECT *, ((_xm_bucket(_ra, _xm_nbuckets(_z, radius)) + db) % _xm_nbuckets(_z, radius)
                   + _xm_nbuckets(_z, radius)) % _xm_nbuckets(_z, radius) AS _b
        FROM lk),
    cand AS (
        SELECT lb._left_row, rk.match, ang_sep(lb._ra, lb._dec, rk._ra, rk._dec) AS sep
        FROM lb JOIN rk ON rk._z = lb._z AND rk._b = lb._b
        WHERE rk._dec BETWEEN lb._dec - radius AND lb._dec + radius)
    -- a bucket can be reached twice when a strip has fewer than 3 buckets: min() does not mind
    SELECT _left_row, arg_min(match, sep) AS match, min(sep) AS sep
    FROM cand WHERE sep <= radius GROUP BY _left_row;
