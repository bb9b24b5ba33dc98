"""Adjacency matrices built from a skeleton layout (pskd.data.layouts), one graph network for every layout.

The spatial partition of ST-GCN: for each joint, (0) itself, (1) its neighbours nearer the centre joint
(inward, towards the root of the bone tree) and (2) those farther from it (outward). Each partition is
normalised by in-degree, so a graph convolution averages over neighbours rather than summing.
"""

from __future__ import annotations

import numpy as np

from pskd.data.layouts import Layout


def hop_distance(layout: Layout) -> np.ndarray:
    """Number of bones between every pair of joints (inf when disconnected)."""
    n = layout.num_joints
    distance = np.full((n, n), np.inf)
    np.fill_diagonal(distance, 0)
    neighbours = [[] for _ in range(n)]
    for child, parent in layout.bones:
        neighbours[child].append(parent)
        neighbours[parent].append(child)
    for start in range(n):
        frontier, seen = [start], {start}
        depth = 0
        while frontier:
            depth += 1
            following = []
            for joint in frontier:
                for other in neighbours[joint]:
                    if other not in seen:
                        seen.add(other)
                        distance[start, other] = depth
                        following.append(other)
            frontier = following
    return distance


def normalise_columns(matrix: np.ndarray) -> np.ndarray:
    """A D^-1 with D the column sums: column j of the result averages the joints that feed joint j."""
    degree = matrix.sum(axis=0)
    scale = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    return matrix * scale[None, :]


def spatial_partitions(layout: Layout) -> np.ndarray:
    """[3, J, J]: self links, inward links and outward links, each column-normalised.

    A[k, i, j] is the weight with which joint i contributes to joint j in partition k.
    """
    n = layout.num_joints
    to_center = hop_distance(layout)[:, layout.center]
    self_links = np.eye(n)
    inward = np.zeros((n, n))
    outward = np.zeros((n, n))
    for child, parent in layout.bones:
        for source, target in ((child, parent), (parent, child)):
            # source feeds target; "inward" when the source is nearer the centre than the target
            if to_center[source] < to_center[target]:
                inward[source, target] = 1
            else:
                outward[source, target] = 1
    return np.stack([self_links, normalise_columns(inward), normalise_columns(outward)]).astype(np.float32)
