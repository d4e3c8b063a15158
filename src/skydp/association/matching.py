"""Error-aware one-to-one matching of one visit's DiaSources to DiaObjects.

Candidates are all (source, object) pairs closer than the association radius, found with scipy
cKDTrees on unit vectors (chord distance, exact for any separation and free of RA wrap; see
``skydp.association.object_state``).
Each candidate is scored by the 2-D Gaussian negative log-likelihood of the tangent-plane offset,
``d^T C^-1 d + ln det C`` with C = source covariance + object covariance + floor^2 (as the
current LSST ap_association HEAD does). The one-to-one assignment then maximises the number of
matched pairs and, among those, minimises the summed cost: components of the candidate graph
with a single pair (nearly all of them for isolated transients) are accepted directly, vectorised;
conflicted components that are stars (one source with several candidate objects, or one object
with several candidate sources) take their cheapest pair, also vectorised; the rare others are
solved exactly with scipy.optimize.linear_sum_assignment on their small dense cost matrices.
This is optimal within each component, unlike the DP1-era greedy handshake, which can leave a source unmatched because its nearest object was taken by a
neighbour that had another candidate.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

ARCSEC = 1.0 / 3600.0
# A cost no real candidate reaches: marks non-candidate cells of a component's dense matrix so
# that linear_sum_assignment uses them only when no further candidate pair can be added.
_NOT_A_CANDIDATE = 1e12


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """(N, 3) unit vectors of (ra, dec) in degrees."""
    ra_r, dec_r = np.radians(ra), np.radians(dec)
    cos_dec = np.cos(dec_r)
    return np.stack([cos_dec * np.cos(ra_r), cos_dec * np.sin(ra_r), np.sin(dec_r)], axis=1)


def sky_from_vectors(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of the directions of (N, 3) vectors (need not be normalised)."""
    x, y, z = vectors[:, 0], vectors[:, 1], vectors[:, 2]
    ra = np.mod(np.degrees(np.arctan2(y, x)), 360.0)
    dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


def pair_costs(
    d_east: np.ndarray, d_north: np.ndarray, cov_ee: np.ndarray, cov_nn: np.ndarray, cov_en: np.ndarray
) -> np.ndarray:
    """Gaussian NLL ``d^T C^-1 d + ln det C`` of tangent-plane offsets (arcsec, arcsec^2)."""
    det = cov_ee * cov_nn - cov_en**2
    chi2 = (d_east**2 * cov_nn - 2.0 * d_east * d_north * cov_en + d_north**2 * cov_ee) / det
    return chi2 + np.log(det)


def match_one_to_one(
    src: np.ndarray, obj: np.ndarray, cost: np.ndarray, n_sources: int, n_objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-cardinality, minimum-cost one-to-one subset of the candidate pairs.

    Returns the matched (source, object) index arrays.
    """
    if src.size == 0:
        return src, obj
    src_degree = np.bincount(src, minlength=n_sources)
    obj_degree = np.bincount(obj, minlength=n_objects)
    simple = (src_degree[src] == 1) & (obj_degree[obj] == 1)
    keep_src, keep_obj = [src[simple]], [obj[simple]]
    if not simple.all():
        c_src, c_obj, c_cost = src[~simple], obj[~simple], cost[~simple]
        # bipartite graph of the conflicted pairs: nodes 0..ns-1 are their sources, ns.. their objects
        s_ids, s_node = np.unique(c_src, return_inverse=True)
        o_ids, o_node = np.unique(c_obj, return_inverse=True)
        ns, n_nodes = s_ids.size, s_ids.size + o_ids.size
        graph = coo_matrix((np.ones(c_src.size), (s_node, ns + o_node)), shape=(n_nodes, n_nodes))
        n_comp, label = connected_components(graph, directed=False)
        # a star (one source or one object: nearly every conflict) matches one pair, its cheapest
        star = (np.bincount(label[:ns], minlength=n_comp) == 1) | (np.bincount(label[ns:], minlength=n_comp) == 1)
        comp = label[s_node]
        order = np.lexsort((c_cost, comp))  # by component, cheapest pair first
        start = np.flatnonzero(np.concatenate([[True], comp[order][1:] != comp[order][:-1]]))
        cheapest = order[start[star[comp[order[start]]]]]
        keep_src.append(c_src[cheapest])
        keep_obj.append(c_obj[cheapest])
        bounds = np.append(start, order.size)
        for k in np.flatnonzero(~star[comp[order[start]]]):
            members = order[bounds[k]:bounds[k + 1]]
            rows_ids, s_local = np.unique(c_src[members], return_inverse=True)
            cols_ids, o_local = np.unique(c_obj[members], return_inverse=True)
            matrix = np.full((rows_ids.size, cols_ids.size), _NOT_A_CANDIDATE)
            matrix[s_local, o_local] = c_cost[members]
            rows, cols = linear_sum_assignment(matrix)
            real = matrix[rows, cols] < _NOT_A_CANDIDATE
            keep_src.append(rows_ids[rows[real]])
            keep_obj.append(cols_ids[cols[real]])
    return np.concatenate(keep_src), np.concatenate(keep_obj)
