"""Exact circle-pixel overlap sums for many radii and sources (numba kernels).

The image is swept once, row by row; each row becomes prefix sums of the image and variance over
its pixels outside every footprint, and every source whose circles reach the row takes the
pixels wholly inside each circle as one difference of two prefix sums. Only the pixels a
circle crosses need their exact overlap: the area of the disc within a row's band and right of a
pixel edge, ``_right_area``, is a closed form, and a pixel's overlap is the difference at its two
edges. A source's own footprint pixels wholly inside a circle (excluded from the shared prefix
sums) are then added one by one. This is a compiled loop because sep.sum_circle (the same exact
geometry) walks every pixel of every radius's bounding box, which for nine radii up to 70 px
was most of single-visit processing time, and numpy cannot express per-row, per-radius ranges
without materialising every box.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _half_segment(u: float, r: float) -> float:
    """H(u) = integral from 0 to u of sqrt(r^2 - t^2) dt, for |u| <= r."""
    q = min(max(u / r, -1.0), 1.0)
    return 0.5 * (u * math.sqrt(max(r * r - u * u, 0.0)) + r * r * math.asin(q))


@numba.njit(cache=True, nogil=True)
def _band_term(x: float, hx: float, s: float, t: float, w: float, hw: float) -> float:
    """s * ([H(cw) - H(w)] + t (w - cw)) with cw = x clipped to [-w, w] and hx = H(x) (used only
    when |x| < w): the part of T(x, t) = integral_{max(x,-r)}^{r} min(t, sqrt(r^2-u^2)) du
    beyond H(r) - H(x)."""
    if s == 0.0:
        return 0.0
    if x <= -w:
        cw, hcw = -w, -hw
    elif x >= w:
        cw, hcw = w, hw
    else:
        cw, hcw = x, hx
    return s * (t * (w - cw) - (hw - hcw))


@numba.njit(cache=True, nogil=True)
def _right_area(x: float, hx: float, hr: float, s1: float, t1: float, w1: float, hw1: float,
                s0: float, t0: float, w0: float, hw0: float) -> float:
    """Area of the disc of radius r about the origin inside the band y0 <= v <= y1 and right of u = x.

    With S(x, y) = sign(y) T(x, |y|) the area is S(x, y1) - S(x, y0); the H(r) - H(x) parts of
    the two T cancel unless the band straddles v = 0. (s, t, w, hw) per band edge: sign(y), |y|,
    sqrt(r^2 - y^2) (0 beyond r) and H(w); hx = H(x clipped to [-r, r]), hr = H(r).
    """
    area = _band_term(x, hx, s1, t1, w1, hw1) - _band_term(x, hx, s0, t0, w0, hw0)
    if s1 != s0:
        area += (s1 - s0) * (hr - hx)
    return area


@numba.njit(cache=True, nogil=True)
def _edge_terms(y: float, radii: np.ndarray, w: np.ndarray, hw: np.ndarray) -> None:
    """w = sqrt(r^2 - y^2) (0 where |y| >= r) and H(w) for every radius at band edge v = y."""
    for k in range(radii.size):
        r = radii[k]
        if abs(y) >= r:
            w[k] = hw[k] = 0.0
        else:
            w[k] = math.sqrt(r * r - y * y)
            hw[k] = _half_segment(w[k], r)


@numba.njit(cache=True, nogil=True)
def _columns(cx: float, near: float, far: float, r: float, nx: int) -> tuple[int, int, int, int]:
    """For a row whose band is ``near``..``far`` from the centre (in y): the columns ic..idd the
    circle touches and ia..ib it holds wholly (both empty when ic > idd or ia > ib), within the image."""
    if near >= r:
        return 1, 0, 1, 0
    w_out = math.sqrt(r * r - near * near)
    # touched: [i - 1/2, i + 1/2] meets (cx - w_out, cx + w_out)
    ic = max(0, math.floor(cx - 0.5 - w_out) + 1)
    idd = min(nx - 1, math.ceil(cx + 0.5 + w_out) - 1)
    ia, ib = idd + 1, idd
    if far < r:  # wholly inside: both corners of the band's far edge within the circle
        w_in = math.sqrt(r * r - far * far)
        ia = max(ic, math.ceil(cx + 0.5 - w_in))
        ib = min(idd, math.floor(cx - 0.5 + w_in))
    return ic, idd, ia, ib


@numba.njit(cache=True, nogil=True)
def label_index(segmap: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the pixels of each label 1..n_labels: pixels[start[l]:start[l + 1]], in
    raster order (a counting sort in two passes over the map)."""
    flat = segmap.ravel()
    start = np.zeros(n_labels + 2, dtype=np.int64)
    for lab in flat:
        if 0 < lab <= n_labels:
            start[lab + 1] += 1
    for lab in range(1, n_labels + 2):
        start[lab] += start[lab - 1]
    fill = start[:-1].copy()
    pixels = np.empty(start[-1], dtype=np.int64)
    for p in range(flat.size):
        lab = flat[p]
        if 0 < lab <= n_labels:
            pixels[fill[lab]] = p
            fill[lab] += 1
    return start, pixels


@numba.njit(cache=True, nogil=True)
def aperture_sums(image: np.ndarray, variance: np.ndarray, segmap: np.ndarray, use_segmap: bool,
                  xs: np.ndarray, ys: np.ndarray, own: np.ndarray, owns_group: np.ndarray, group: np.ndarray,
                  members_start: np.ndarray, members: np.ndarray, start: np.ndarray, pixels: np.ndarray,
                  radii: np.ndarray, flux: np.ndarray, var_sum: np.ndarray) -> None:
    """flux[n, k] = sum of overlap * image and var_sum[n, k] = sum of overlap^2 * variance (the
    variance of that sum for independent pixels) over the disc of radius radii[k] about array
    position (xs[n], ys[n]) (pixel (i, j) covers [i - 1/2, i + 1/2] x [j - 1/2, j + 1/2]); flux
    and var_sum must start at zero.

    Pixels off the image count as zero, as do (when ``use_segmap``) pixels whose segmap label is
    neither 0 nor owned by source n: label own[n], or where ``owns_group[n]`` every label l with
    group[l] == own[n] (the labels members[members_start[g]:members_start[g + 1]] of group g; a
    blend parent owns its children). Label l's pixels are pixels[start[l]:start[l + 1]] (see
    ``label_index``). Radii must be positive and ascending, positions finite and sorted by y.
    """
    ny, nx = image.shape
    n_src, nk = xs.size, radii.size
    rmax = radii[nk - 1]
    width = 2 * math.ceil(rmax) + 6
    hr = np.empty(nk)
    for k in range(nk):
        hr[k] = _half_segment(radii[k], radii[k])
    # rows each circle reaches; monotone in y, so the sources active on a row are a contiguous range
    j_lo = np.empty(n_src, dtype=np.int64)
    j_hi = np.empty(n_src, dtype=np.int64)
    for n in range(n_src):
        j_lo[n] = max(0, math.ceil(ys[n] - rmax - 0.5))
        j_hi[n] = min(ny - 1, math.floor(ys[n] + rmax + 0.5))
    cap = 1  # most sources active at once: per-source work tables live in a ring of cap slots
    m = 0
    for n in range(n_src):
        while m < n_src and j_lo[m] <= j_hi[n]:
            m += 1
        cap = max(cap, m - n)
    hx = np.zeros((cap, nk, width))  # H(x) at the column edges x = e0 + e - 1/2 - cx, per radius
    e0 = np.empty(n_src, dtype=np.int64)
    w_lo, hw_lo = np.zeros((cap, nk)), np.zeros((cap, nk))  # at the current row's lower edge
    w_hi, hw_hi = np.zeros(nk), np.zeros(nk)
    pre_f, pre_v = np.zeros(nx + 1), np.zeros(nx + 1)  # prefix sums of the row outside footprints
    lo = hi = 0
    for j in range(ny):
        while hi < n_src and j_lo[hi] <= j:  # a source enters: its edge-H table and first edge
            slot, cx = hi % cap, xs[hi]
            e0[hi] = math.floor(cx - rmax) - 1
            for k in range(nk):
                r = radii[k]
                # only the column edges circle k can cross are ever read (see _columns)
                for e in range(max(0, math.floor(cx - 0.5 - r) + 1 - e0[hi]),
                               min(width, math.ceil(cx + 0.5 + r) - e0[hi] + 1)):
                    x = e0[hi] + e - 0.5 - cx
                    hx[slot, k, e] = -hr[k] if x <= -r else (hr[k] if x >= r else _half_segment(x, r))
            _edge_terms(j - 0.5 - ys[hi], radii, w_lo[slot], hw_lo[slot])
            hi += 1
        while lo < hi and j_hi[lo] < j:
            lo += 1
        if lo == hi:
            continue
        for i in range(nx):
            keep = not use_segmap or segmap[j, i] == 0
            pre_f[i + 1] = pre_f[i] + (image[j, i] if keep else 0.0)
            pre_v[i + 1] = pre_v[i] + (variance[j, i] if keep else 0.0)
        for n in range(lo, hi):
            if j < j_lo[n] or j > j_hi[n]:
                continue
            slot, cx = n % cap, xs[n]
            y0 = j - 0.5 - ys[n]
            y1 = y0 + 1.0
            _edge_terms(y1, radii, w_hi, hw_hi)
            near = 0.0 if y0 < 0.0 < y1 else min(abs(y0), abs(y1))
            far = max(abs(y0), abs(y1))
            s1 = 1.0 if y1 > 0.0 else (-1.0 if y1 < 0.0 else 0.0)
            s0 = 1.0 if y0 > 0.0 else (-1.0 if y0 < 0.0 else 0.0)
            own_label, by_group = own[n], owns_group[n]
            for k in range(nk):
                ic, idd, ia, ib = _columns(cx, near, far, radii[k], nx)
                if ic > idd:
                    continue
                f_row = v_row = 0.0
                if ia <= ib:
                    f_row = pre_f[ib + 1] - pre_f[ia]
                    v_row = pre_v[ib + 1] - pre_v[ia]
                    runs = ((ic, ia - 1), (ib + 1, idd))
                else:
                    runs = ((ic, idd), (1, 0))
                for a, b in runs:
                    if a > b:
                        continue
                    right = _right_area(a - 0.5 - cx, hx[slot, k, a - e0[n]], hr[k], s1, abs(y1), w_hi[k],
                                        hw_hi[k], s0, abs(y0), w_lo[slot, k], hw_lo[slot, k])
                    for i in range(a, b + 1):
                        nxt = _right_area(i + 0.5 - cx, hx[slot, k, i + 1 - e0[n]], hr[k], s1, abs(y1),
                                          w_hi[k], hw_hi[k], s0, abs(y0), w_lo[slot, k], hw_lo[slot, k])
                        frac = right - nxt
                        right = nxt
                        lab = segmap[j, i] if use_segmap else 0
                        if lab == 0 or (group[lab] if by_group else lab) == own_label:
                            f_row += frac * image[j, i]
                            v_row += frac * frac * variance[j, i]
                flux[n, k] += f_row
                var_sum[n, k] += v_row
            w_lo[slot, :] = w_hi  # this row's upper edge is the next row's lower edge
            hw_lo[slot, :] = hw_hi
    if not use_segmap:
        return
    # each source's own footprint pixels wholly inside a circle, left out of the prefix sums above
    # (the crossed ones were summed in the sweep); pixels come in raster order, so rows in turn
    ia = np.zeros(nk, dtype=np.int64)
    ib = np.zeros(nk, dtype=np.int64)
    for n in range(n_src):
        if owns_group[n]:
            g = own[n]
            if g <= 0 or g >= members_start.size - 1:
                continue
            labels = members[members_start[g]:members_start[g + 1]]
        else:
            labels = own[n:n + 1]
        for label in labels:
            if label <= 0 or label >= start.size - 1:
                continue
            _add_inside_pixels(image, variance, xs[n], ys[n], radii, pixels[start[label]:start[label + 1]],
                               ia, ib, flux[n], var_sum[n])


@numba.njit(cache=True, nogil=True)
def _add_inside_pixels(image: np.ndarray, variance: np.ndarray, cx: float, cy: float, radii: np.ndarray,
                       pixels: np.ndarray, ia: np.ndarray, ib: np.ndarray, flux: np.ndarray,
                       var_sum: np.ndarray) -> None:
    """Add the ``pixels`` (flat indices, raster order) wholly inside each circle about (cx, cy)."""
    nx = image.shape[1]
    row = -1
    for q in range(pixels.size):
        j, i = divmod(pixels[q], nx)
        if j != row:
            row = j
            y0 = j - 0.5 - cy
            y1 = y0 + 1.0
            near = 0.0 if y0 < 0.0 < y1 else min(abs(y0), abs(y1))
            far = max(abs(y0), abs(y1))
            for k in range(radii.size):
                _, _, ia[k], ib[k] = _columns(cx, near, far, radii[k], nx)
        for k in range(radii.size):
            if ia[k] <= i <= ib[k]:
                flux[k] += image[j, i]
                var_sum[k] += variance[j, i]
