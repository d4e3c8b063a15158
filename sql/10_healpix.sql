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
-- Speed: DuckDB pastes macro arguments textually, and its common-subexpression elimination (which
-- runs only in projections and does not look inside CASE, AND or OR) then has to find the repeats
-- again.  Execution is fast once it has, but planning grows with the pasted tree, so every macro
-- below names a large argument as few times as possible: the belt and cap formulas are both
-- evaluated and one is selected with a 0/1 factor (a CASE would hide them from the elimination);
-- x and y are selected before they are interleaved; the interleaving reads bytes from a table (the
-- five-step mask cascade names its argument 32 times: 30x the planning time for ~50 ns/row less
-- execution); the equatorial face comes from a table.  Every intermediate value stays finite and
-- >= 0 in the formula that is not selected.  The tree is ~6500 nodes: ~0.08 s to plan.

-- Morton code: the bits of v (0 <= v < 2**32) on the even bit positions, a byte at a time.
CREATE OR REPLACE MACRO _hpx_spread8(b) AS ([
    0, 1, 4, 5, 16, 17, 20, 21, 64, 65, 68, 69, 80, 81, 84, 85,
    256, 257, 260, 261, 272, 273, 276, 277, 320, 321, 324, 325, 336, 337, 340, 341,
    1024, 1025, 1028, 1029, 1040, 1041, 1044, 1045, 1088, 1089, 1092, 1093, 1104, 1105, 1108, 1109,
    1280, 1281, 1284, 1285, 1296, 1297, 1300, 1301, 1344, 1345, 1348, 1349, 1360, 1361, 1364, 1365,
    4096, 4097, 4100, 4101, 4112, 4113, 4116, 4117, 4160, 4161, 4164, 4165, 4176, 4177, 4180, 4181,
    4352, 4353, 4356, 4357, 4368, 4369, 4372, 4373, 4416, 4417, 4420, 4421, 4432, 4433, 4436, 4437,
    5120, 5121, 5124, 5125, 5136, 5137, 5140, 5141, 5184, 5185, 5188, 5189, 5200, 5201, 5204, 5205,
    5376, 5377, 5380, 5381, 5392, 5393, 5396, 5397, 5440, 5441, 5444, 5445, 5456, 5457, 5460, 5461,
    16384, 16385, 16388, 16389, 16400, 16401, 16404, 16405, 16448, 16449, 16452, 16453, 16464, 16465, 16468, 16469,
    16640, 16641, 16644, 16645, 16656, 16657, 16660, 16661, 16704, 16705, 16708, 16709, 16720, 16721, 16724, 16725,
    17408, 17409, 17412, 17413, 17424, 17425, 17428, 17429, 17472, 17473, 17476, 17477, 17488, 17489, 17492, 17493,
    17664, 17665, 17668, 17669, 17680, 17681, 17684, 17685, 17728, 17729, 17732, 17733, 17744, 17745, 17748, 17749,
    20480, 20481, 20484, 20485, 20496, 20497, 20500, 20501, 20544, 20545, 20548, 20549, 20560, 20561, 20564, 20565,
    20736, 20737, 20740, 20741, 20752, 20753, 20756, 20757, 20800, 20801, 20804, 20805, 20816, 20817, 20820, 20821,
    21504, 21505, 21508, 21509, 21520, 21521, 21524, 21525, 21568, 21569, 21572, 21573, 21584, 21585, 21588, 21589,
    21760, 21761, 21764, 21765, 21776, 21777, 21780, 21781, 21824, 21825, 21828, 21829, 21840, 21841, 21844, 21845]::BIGINT[])[b + 1];
CREATE OR REPLACE MACRO _hpx_spread(v) AS
    _hpx_spread8(v & 255) | (_hpx_spread8((v >> 8) & 255) << 16)
    | (_hpx_spread8((v >> 16) & 255) << 32) | (_hpx_spread8(v >> 24) << 48);

-- C++ fmodulo(v, 4.0) for the longitude in units of pi/2: v - 4*floor(v/4) is exact wherever
-- fmodulo is exact, and the outer fmod maps the one rounded case (tiny negative v -> 4.0) to 0.
CREATE OR REPLACE MACRO _hpx_mod4(v) AS fmod(v - 4 * floor(v / 4), 4);

-- Equatorial belt (|z| <= 2/3): edge-line index floor(ns*(0.5+tt) -/+ ns*z*0.75) (t2 carries the
-- sign), and the face from ifp = jp >> order, ifm = jm >> order: C++ gives (ifp|4) when they are
-- equal, ifp when ifp < ifm, else ifm+8; in the belt |ifp - ifm| <= 1, so 2*ifp + ifm (0..12)
-- identifies the case.  Entries 13..15 are only reached in the caps (jp, jm <= 5.25 ns).
CREATE OR REPLACE MACRO _hpx_eq_j(ns, tt, t2) AS greatest(floor(ns * (0.5 + tt) + t2), 0)::BIGINT;
CREATE OR REPLACE MACRO _hpx_eq_face(ifp, ifm) AS
    ([4, 0, 8, 5, 1, 9, 6, 2, 10, 7, 3, 11, 4, 0, 0, 0]::BIGINT[])[2 * ifp + ifm + 1];

-- Polar caps: scaled distance from the pole (tmp in loc2pix; sin() only evaluated for the rows
-- within 0.01 rad of a pole), then an edge-line index limited to ns - 1.
CREATE OR REPLACE MACRO _hpx_pol_tmp(ns, za, theta) AS coalesce(
    CASE WHEN theta < '0.01'::DOUBLE OR theta > '3.14159'::DOUBLE - '0.01'::DOUBLE
         THEN ns * sin(theta) / sqrt((1 + abs(cos(theta))) / 3) END,
    ns * sqrt(3 * (1 - za)));
CREATE OR REPLACE MACRO _hpx_pol_j(ns, f, tmp) AS least(floor(f * tmp)::BIGINT, ns - 1);

-- Select x, y and the face between the belt (eq = 1) and the caps (eq = 0; north = 1 for z > 0),
-- then xyf2nest.
CREATE OR REPLACE MACRO _hpx_nest(k, ns, eq, north, jp, jm, ntt, pjp, pjm) AS
    ((eq * _hpx_eq_face(jp >> k, jm >> k) + (1 - eq) * (ntt + 8 * (1 - north))) << (2 * k))
    | _hpx_spread(eq * (jm & (ns - 1)) + (1 - eq) * (north * (ns - 1 - pjm) + (1 - north) * pjp))
    | (_hpx_spread(eq * (ns - 1 - (jp & (ns - 1))) + (1 - eq) * (north * (ns - 1 - pjp) + (1 - north) * pjm)) << 1);

-- tt < 4, so int(tt) = floor(tt) <= 3 (C++ takes min(3, int(tt))).
CREATE OR REPLACE MACRO _hpx_nest_ztt(k, ns, z, tt, theta) AS
    _hpx_nest(k, ns, (abs(z) <= 2.0::DOUBLE / 3)::BIGINT, (z > 0)::BIGINT,
              _hpx_eq_j(ns, tt, -(ns * (z * 0.75))), _hpx_eq_j(ns, tt, ns * (z * 0.75)),
              floor(tt)::BIGINT,
              _hpx_pol_j(ns, tt - floor(tt), _hpx_pol_tmp(ns, abs(z), theta)),
              _hpx_pol_j(ns, 1.0 - (tt - floor(tt)), _hpx_pol_tmp(ns, abs(z), theta)));

CREATE OR REPLACE MACRO _hpx_theta(dec) AS pi() / 2 - dec * (pi() / 180);

CREATE OR REPLACE MACRO healpix_nest(k, ra, dec) AS
    _hpx_nest_ztt(k::BIGINT, 1::BIGINT << k, cos(_hpx_theta(dec)),
                  _hpx_mod4(ra * (pi() / 180) * '0.6366197723675813430755350534900574'::DOUBLE),
                  _hpx_theta(dec));
