-- healpix_nest(order, ra, dec): HEALPix NESTED pixel index of (ra, dec) in degrees at order 0..29.
--
-- Plain SQL so that it works in the duckdb shell without Python (no DuckDB extension provides
-- HEALPix).  It reproduces, operation for operation in IEEE double precision, what healpy's
-- ang2pix(2**order, ra, dec, nest=True, lonlat=True) computes: numpy turns degrees into
-- theta = pi/2 - dec*(pi/180) and phi = ra*(pi/180), then the HEALPix C++ T_Healpix_Base::loc2pix
-- (z = cos(theta); tt = phi*(2/pi) modulo 4; in the polar caps sin(theta) replaces
-- sqrt(3(1-|z|)) when theta < 0.01 or theta > 3.14159-0.01; conversions to integer truncate) and
-- xyf2nest (face number in the top bits, the bits of x and y interleaved below).  Every value is
-- >= 0 where it is truncated, so floor() equals the C++ truncation.  Long constants are cast from
-- strings so that they round exactly like the C literals.
--
-- The macros are branch-free on purpose: DuckDB's common-subexpression elimination does not look
-- inside CASE, AND or OR, and macros expand textually, so a CASE over the intermediate values would
-- re-evaluate them dozens of times per row (measured 40x slower).  Both the equatorial and the
-- polar formulas are evaluated and one is selected with a 0/1 factor; every intermediate value
-- stays finite and >= 0 in the branch that is not selected.  Use it in a SELECT list (a
-- projection), where the elimination runs.  Planning one call takes about half a second because of
-- the expanded expression tree, which is why cone() prunes with the precomputed _skydp_cells table.

-- Morton code: spread the low 32 bits of v onto the even bit positions, in five mask steps.
CREATE OR REPLACE MACRO _hpx_spread16(v) AS (v | (v << 16)) & 281470681808895;      -- 0x0000FFFF0000FFFF
CREATE OR REPLACE MACRO _hpx_spread8(v)  AS (v | (v << 8))  & 71777214294589695;    -- 0x00FF00FF00FF00FF
CREATE OR REPLACE MACRO _hpx_spread4(v)  AS (v | (v << 4))  & 1085102592571150095;  -- 0x0F0F0F0F0F0F0F0F
CREATE OR REPLACE MACRO _hpx_spread2(v)  AS (v | (v << 2))  & 3689348814741910323;  -- 0x3333333333333333
CREATE OR REPLACE MACRO _hpx_spread1(v)  AS (v | (v << 1))  & 6148914691236517205;  -- 0x5555555555555555
CREATE OR REPLACE MACRO _hpx_spread(v) AS
    _hpx_spread1(_hpx_spread2(_hpx_spread4(_hpx_spread8(_hpx_spread16(v)))));

CREATE OR REPLACE MACRO _hpx_xyf2nest(k, ix, iy, face) AS
    (face << (2 * k)) | _hpx_spread(ix) | (_hpx_spread(iy) << 1);

-- C++ fmodulo(v, 4.0) for the longitude in units of pi/2: v - 4*floor(v/4) is exact wherever
-- fmodulo is exact, and the outer fmod maps the one rounded case (tiny negative v -> 4.0) to 0.
CREATE OR REPLACE MACRO _hpx_mod4(v) AS fmod(v - 4 * floor(v / 4), 4);

-- Equatorial belt (|z| <= 2/3): ascending / descending edge-line indices and the face.
CREATE OR REPLACE MACRO _hpx_eq_jp(ns, z, tt) AS greatest(floor(ns * (0.5 + tt) - ns * (z * 0.75)), 0)::BIGINT;
CREATE OR REPLACE MACRO _hpx_eq_jm(ns, z, tt) AS greatest(floor(ns * (0.5 + tt) + ns * (z * 0.75)), 0)::BIGINT;
CREATE OR REPLACE MACRO _hpx_eq_face(ifp, ifm) AS
    (ifp = ifm)::BIGINT * (ifp | 4) + (ifp < ifm)::BIGINT * ifp + (ifp > ifm)::BIGINT * (ifm + 8);

-- Polar caps: scaled distance from the pole (tmp in loc2pix), then the edge-line indices.
CREATE OR REPLACE MACRO _hpx_have_sth(theta) AS
    ((theta < '0.01'::DOUBLE)::INTEGER + (theta > '3.14159'::DOUBLE - '0.01'::DOUBLE)::INTEGER)::BIGINT;
CREATE OR REPLACE MACRO _hpx_pol_tmp(ns, za, theta) AS
    _hpx_have_sth(theta) * (ns * sin(theta) / sqrt((1 + za) / 3))
    + (1 - _hpx_have_sth(theta)) * (ns * sqrt(3 * (1 - za)));
CREATE OR REPLACE MACRO _hpx_pol_ntt(tt) AS least(3, floor(tt))::BIGINT;
CREATE OR REPLACE MACRO _hpx_pol_jp(ns, tt, tmp) AS least(floor((tt - _hpx_pol_ntt(tt)) * tmp)::BIGINT, ns - 1);
CREATE OR REPLACE MACRO _hpx_pol_jm(ns, tt, tmp) AS least(floor((1.0 - (tt - _hpx_pol_ntt(tt))) * tmp)::BIGINT, ns - 1);

-- Select between the belt (eq = 1) and the caps (eq = 0); north = 1 for z > 0.
CREATE OR REPLACE MACRO _hpx_select(k, ns, eq, north, ntt, ejp, ejm, pjp, pjm) AS
    _hpx_xyf2nest(k,
        eq * (ejm & (ns - 1)) + (1 - eq) * (north * (ns - pjm - 1) + (1 - north) * pjp),
        eq * (ns - (ejp & (ns - 1)) - 1) + (1 - eq) * (north * (ns - pjp - 1) + (1 - north) * pjm),
        eq * _hpx_eq_face(ejp >> k, ejm >> k) + (1 - eq) * (ntt + 8 * (1 - north)));

CREATE OR REPLACE MACRO _hpx_nest_ztt(k, ns, z, tt, theta) AS
    _hpx_select(k, ns,
        (abs(z) <= 2.0::DOUBLE / 3)::BIGINT, (z > 0)::BIGINT, _hpx_pol_ntt(tt),
        _hpx_eq_jp(ns, z, tt), _hpx_eq_jm(ns, z, tt),
        _hpx_pol_jp(ns, tt, _hpx_pol_tmp(ns, abs(z), theta)),
        _hpx_pol_jm(ns, tt, _hpx_pol_tmp(ns, abs(z), theta)));

CREATE OR REPLACE MACRO _hpx_theta(dec) AS pi() / 2 - dec * (pi() / 180);

CREATE OR REPLACE MACRO healpix_nest(k, ra, dec) AS
    _hpx_nest_ztt(k::BIGINT, 1::BIGINT << k, cos(_hpx_theta(dec)),
                  _hpx_mod4(ra * (pi() / 180) * '0.6366197723675813430755350534900574'::DOUBLE),
                  _hpx_theta(dec));
