-- healpix_nest(order, ra, dec): HEALPix NESTED pixel index of (ra, dec) in degrees at order 0..29.
--
-- Plain SQL so that it works in the duckdb shell without Python (no DuckDB extension provides
-- HEALPix).  It reproduces, operation for operation in IEEE double precision, what healpy's
-- ang2pix(2**order, ra, dec, nest=True, lonlat=True) computes: numpy turns degrees into
-- theta = pi/2 - dec*(pi/180) and phi = ra*(pi/180), then the HEALPix C++ T_Healpix_Base::loc2pix
-- (z = cos(theta); tt = phi*(2/pi) modulo 4; in the polar caps sin(theta) replaces
-- sqrt(3(1-|z|)) when theta < 0.01 or theta > 3.14159-0.01; conversions to integer truncate) and
-- xyf2nest (face number in the top bits, the bits of x and y interleaved below).  Every value is
-- >= 0 where it is truncated, so floor() equals the C++ truncation.  Constants are written as
-- DOUBLE literals (1.5e0, not 1.5, which DuckDB would read as DECIMAL) that round like the C ones.
-- The result is NULL where healpy raises: order outside 0..29, |dec| > 90, ra or dec not finite.
--
-- Algebra used to keep the expression small (all exact): nside is a power of two, so
-- nside*a + nside*b = nside*(a + b) and tp*(nside*T) = nside*(tp*T) bit for bit; the cap index
-- pairs (jm, jp) of the north and (jp, jm) of the south are one formula with u = |north - tp|
-- (1.0 - tp or tp exactly); the C++ limit min(j, nside-1) never acts in double precision
-- (u <= 1 and T < 1 make u*T < 1), so it is left out; nside-1-j is j XOR (nside-1), so the
-- flips are applied to the interleaved bits at the end.
--
-- Speed (bench/bench_store.py --only healpix): DuckDB pastes macro arguments textually; its
-- common-subexpression elimination (projections only, not inside CASE) finds the repeats again at
-- execution, but binding and that elimination cost planning time in proportion to the pasted tree.
-- So every large value is named as few times as possible: belt and cap are both evaluated and one
-- is selected with a 0/1 factor (CASE would hide the shared parts from the elimination), x and y
-- are named once each by the face and four times by the interleave.  The interleave reads 8-bit
-- lookup tables, one per byte position with the shift built in (tables are constant-folded once
-- per query; a DuckDB constant list costs ~5 ns per lookup).  The classic five-step mask cascade
-- would be ~20 ns/row cheaper to run, but names its argument 32 times: a ~6x larger tree and
-- 0.3-1.5 s of planning; inside a lambda (a `let`) nothing is shared and the lookups cost twice as
-- much.  Measured on the 2-core machine: ~135 ns of CPU per row at any order (the previous
-- version ~185), healpy ~43; a one-row query plans in ~20 ms of CPU (previously ~33).

-- Byte b of a coordinate, its bits moved to the even positions and shifted left by s (n entries;
-- BIGINT before the shift because Spark's sequence() gives 32-bit integers).
CREATE OR REPLACE MACRO _hpx_lut(b, s, n) AS
    list_transform(range(n), lambda t: ((t & 1) | ((t & 2) << 1) | ((t & 4) << 2) | ((t & 8) << 3)
                                        | ((t & 16) << 4) | ((t & 32) << 5) | ((t & 64) << 6)
                                        | ((t & 128) << 7))::BIGINT << s)[b + 1];

-- Bits of x (< 2**29) on the even, of y on the odd positions.
CREATE OR REPLACE MACRO _hpx_interleave(x, y) AS
      _hpx_lut(x & 255, 0, 256) | _hpx_lut((x >> 8) & 255, 16, 256)
    | _hpx_lut((x >> 16) & 255, 32, 256) | _hpx_lut(x >> 24, 48, 32)
    | _hpx_lut(y & 255, 1, 256) | _hpx_lut((y >> 8) & 255, 17, 256)
    | _hpx_lut((y >> 16) & 255, 33, 256) | _hpx_lut(y >> 24, 49, 32);

-- Equatorial face from ifp = jp >> order, ifm = jm >> order: C++ gives (ifp|4) when they are
-- equal, ifp when ifp < ifm, else ifm+8.  In the belt |ifp - ifm| <= 1 and both are <= 5 (5 only
-- where tt rounds to 4.5 - 0.5 and |z| = 2/3: (4, 5) -> 4, (5, 4) -> 12 as in C++), so
-- 2*ifp + ifm (0..15) identifies the case.  In the caps both are 0 (face 4, corrected below).
CREATE OR REPLACE MACRO _hpx_face(ifp, ifm) AS
    ([4, 0, 8, 5, 1, 9, 6, 2, 10, 7, 3, 11, 4, 4, 12, 5]::BIGINT[])[2 * ifp + ifm + 1];

-- Polar caps: distance from the pole in units of nside (tmp / nside in loc2pix); sin() is only
-- evaluated for the rows within 0.01 rad of a pole.
CREATE OR REPLACE MACRO _hpx_cap(theta, za) AS
    CASE WHEN theta NOT BETWEEN 1e-2 AND 3.14159e0 - 1e-2 THEN sin(theta) / sqrt((1e0 + za) / 3e0)
         ELSE sqrt(3e0 * (1e0 - za)) END;

-- Edge-line coordinate (jm for x, jp for y) in units of nside: belt (eq = 1) (0.5 + tt) +/- 0.75 z,
-- caps (eq = 0) u * T.  Both branches are finite and >= 0 on every row.
CREATE OR REPLACE MACRO _hpx_edge(eq, u, a, b, tp, t) AS eq * (a + b) + (1e0 - eq) * (abs(u - tp) * t);

-- Face in the top bits, interleaved x and y below; cap = 1 in the polar caps, north = 1 for z > 0.
-- Caps: face tt's quadrant (+8 in the south), north flips x and y; belt: y is flipped.
CREATE OR REPLACE MACRO _hpx_nest(k, ns, cap, north, tt, jm, jp) AS
    ((_hpx_face(jp >> k, jm >> k) + cap * (floor(tt)::BIGINT + 8 * (1 - north) - 4)) << (2 * k))
    | xor(_hpx_interleave(jm & (ns - 1), jp & (ns - 1)),
          ((cap * north) | (((1 - cap) | north) << 1)) * (((1::BIGINT << (2 * k)) - 1) // 3));

CREATE OR REPLACE MACRO _hpx_nest_z(k, ns, eq, north, tt, tp, t, z) AS
    _hpx_nest(k, ns, 1 - eq::BIGINT, north::BIGINT, tt,
              floor(ns::DOUBLE * _hpx_edge(eq, north, 5e-1 + tt, z * 7.5e-1, tp, t))::BIGINT,
              floor(ns::DOUBLE * _hpx_edge(eq, 1e0 - north, 5e-1 + tt, -(z * 7.5e-1), tp, t))::BIGINT);

CREATE OR REPLACE MACRO _hpx_nest_theta(k, theta, z, tt) AS
    _hpx_nest_z(k, 1::BIGINT << k, (abs(z) <= 2e0 / 3e0)::DOUBLE, (z > 0e0)::DOUBLE, tt, fmod(tt, 1e0),
                _hpx_cap(theta, abs(z)), z);

-- C++ fmodulo(v, 4.0) for the longitude in units of pi/2: v - 4*floor(v/4) is exact wherever
-- fmodulo is exact, and the outer fmod maps the one rounded case (tiny negative v -> 4.0) to 0.
CREATE OR REPLACE MACRO _hpx_nest_v(k, theta, v) AS
    _hpx_nest_theta(k, theta, cos(theta), fmod(v - 4e0 * floor(v / 4e0), 4e0));

CREATE OR REPLACE MACRO healpix_nest(k, ra, dec) AS
    _hpx_nest_v(CASE WHEN k BETWEEN 0 AND 29 THEN k::BIGINT END,
                CASE WHEN dec BETWEEN -90 AND 90 THEN 1.5707963267948966e0 - dec * 1.7453292519943295e-2 END,
                CASE WHEN abs(ra) <= 1.7976931348623157e308 THEN ra * 1.7453292519943295e-2 * 6.366197723675814e-1 END);
