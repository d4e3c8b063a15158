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
-- A 1' cone then reads one row group of one file: its time is planning (~25 ms of CPU, mostly the
-- view's 437 columns and this macro's subqueries) and the parsing of that file's Parquet footer
-- (~0.7 MB for 17 row groups x 434 columns: 10-40 ms); `SET parquet_metadata_cache = true` keeps
-- parsed footers for the session.  Catalog.cone computes the same pruning in Python and passes it
-- as constants (less planning).
CREATE OR REPLACE MACRO cone(tbl, ra0, dec0, radius) AS TABLE
    WITH cells AS (FROM _skydp_cone_cells(ra0, dec0, radius)),
    parts AS (
        SELECT DISTINCT p.Npix FROM _skydp_partitions p, cells c
        WHERE p.table_name = tbl
          AND ((p.Norder <= 7 AND (c.pix >> (2 * (7 - p.Norder))) = p.Npix)
            OR (p.Norder > 7 AND (p.Npix >> (2 * (p.Norder - 7))) = c.pix)))
    SELECT * EXCLUDE (Norder, Dir, Npix, _cone_ra, _cone_dec) FROM (
        SELECT *, COLUMNS('^' || _skydp_ra_col(tbl) || '$') AS _cone_ra,
               COLUMNS('^' || _skydp_dec_col(tbl) || '$') AS _cone_dec
        FROM query_table(tbl)
        WHERE Npix IN (SELECT Npix FROM parts)
          AND _healpix_29 BETWEEN (SELECT min(pix) << 44 FROM cells)
                              AND (SELECT ((max(pix) + 1) << 44) - 1 FROM cells))
    WHERE in_cone(_cone_ra, _cone_dec, ra0, dec0, radius);

-- Cross-match buckets: declination zones of height h = 4 radius; zone z is cut into RA buckets at
-- least 4x as wide as the RA half-width of a circle of that radius centred anywhere within radius
-- of the zone (one bucket when such a circle can reach a pole).  A left row probes the 1-2 zones
-- its circle touches and in each the 1-2 buckets it touches (2.25 probes per row on average,
-- against 9 for fixed 3x3 neighbourhoods), so each right row is hashed once.
CREATE OR REPLACE MACRO _xm_height(radius) AS 4 * radius;
CREATE OR REPLACE MACRO _xm_zone(dec, radius) AS floor((dec + 90) / _xm_height(radius))::BIGINT;
-- RA half-width (deg) of a circle of radius r centred at |dec| = d, plus 1e-9 deg against
-- rounding at bucket edges; 180 when the circle reaches a pole.
CREATE OR REPLACE MACRO _xm_halfwidth(d, r) AS
    CASE WHEN d + r < 90 THEN degrees(asin(sin(radians(r)) / cos(radians(d)))) + 1e-9 ELSE 180 END;
CREATE OR REPLACE MACRO _xm_nbuckets(zone, radius) AS greatest(1, floor(360 / (4 * _xm_halfwidth(
    least(90, greatest(abs(zone * _xm_height(radius) - 90 - radius),
                       abs((zone + 1) * _xm_height(radius) - 90 + radius))), radius))))::BIGINT;
CREATE OR REPLACE MACRO _xm_wrap(b, n) AS (b % n + n) % n;

-- Nearest neighbour in `right` of every row of `left` within radius (deg): _left_row and
-- _right_row, the rows' 0-based positions in each table's scan order (row_number() OVER ()), and
-- the separation `sep` in degrees.  Left rows without a neighbour within radius do not appear.
-- Only row numbers and positions go through the join: join the columns you need back on
-- _right_row, as xmatch() does.
CREATE OR REPLACE MACRO xmatch_rows(left_tbl, right_tbl, radius) AS TABLE
    WITH l AS (
        SELECT row_number() OVER () - 1 AS _left_row,
               COLUMNS(lambda c: c = _skydp_ra_col(left_tbl)) AS _ra,
               COLUMNS(lambda c: c = _skydp_dec_col(left_tbl)) AS _dec
        FROM query_table(left_tbl)),
    r AS (
        SELECT row_number() OVER () - 1 AS _right_row,
               COLUMNS(lambda c: c = _skydp_ra_col(right_tbl)) AS _ra,
               COLUMNS(lambda c: c = _skydp_dec_col(right_tbl)) AS _dec
        FROM query_table(right_tbl)),
    rz AS (SELECT *, _xm_zone(_dec, radius) AS _z FROM r),
    rb AS (SELECT *, _xm_wrap(floor(_ra * _xm_nbuckets(_z, radius) / 360)::BIGINT, _xm_nbuckets(_z, radius)) AS _b
           FROM rz),
    lz AS (
        SELECT *, _xm_halfwidth(abs(_dec), radius) AS _w,
               unnest(range(_xm_zone(_dec - radius, radius), _xm_zone(_dec + radius, radius) + 1)) AS _z
        FROM l),
    ln AS (SELECT *, _xm_nbuckets(_z, radius) AS _n FROM lz),
    lb AS (
        SELECT _left_row, _ra, _dec, _z,
               _xm_wrap(unnest(range(floor((_ra - _w) * _n / 360)::BIGINT,
                                     floor((_ra + _w) * _n / 360)::BIGINT + 1)), _n) AS _b
        FROM ln),
    cand AS (
        SELECT lb._left_row, rb._right_row, ang_sep(lb._ra, lb._dec, rb._ra, rb._dec) AS sep
        FROM lb JOIN rb ON rb._z = lb._z AND rb._b = lb._b
        WHERE rb._dec BETWEEN lb._dec - radius AND lb._dec + radius)
    -- a bucket can be probed twice when a zone has a single bucket: min() does not mind
    SELECT _left_row, arg_min(_right_row, sep) AS _right_row, min(sep) AS sep
    FROM cand WHERE sep <= radius GROUP BY _left_row;

-- xmatch_rows() with the matched right row as the struct `match`: _left_row, match, sep.
CREATE OR REPLACE MACRO xmatch(left_tbl, right_tbl, radius) AS TABLE
    SELECT m._left_row, w.match, m.sep
    FROM xmatch_rows(left_tbl, right_tbl, radius) m
    JOIN (SELECT row_number() OVER () - 1 AS _right_row, t AS match FROM query_table(right_tbl) t) w
      USING (_right_row);
