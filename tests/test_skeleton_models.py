import numpy as np
import pytest
import torch

from pskd.data.layouts import UTD_KINECT_V1, Layout
from pskd.models.graph import hop_distance, normalise_columns, spatial_partitions
from pskd.models.skeleton import GraphConv, SkeletonGCN, skeleton_features

CHAIN = Layout(name="chain", joints=("a", "b", "c", "d"), bones=((0, 1), (2, 1), (3, 2)), center=1)


def test_hop_distance_on_a_chain_and_on_the_kinect_body():
    distance = hop_distance(CHAIN)
    assert distance[0].tolist() == [0, 1, 2, 3]
    kinect = hop_distance(UTD_KINECT_V1)
    right_hand, left_foot = UTD_KINECT_V1.index("right_hand"), UTD_KINECT_V1.index("left_foot")
    # hand - wrist - elbow - shoulder - shoulder centre - spine - hip centre - hip - knee - ankle - foot
    assert kinect[right_hand, left_foot] == 10
    assert np.isfinite(kinect).all() and (kinect == kinect.T).all()


def test_spatial_partitions_by_hand_on_a_chain():
    # centre b (1): a and c are one hop from it, d two hops
    partitions = spatial_partitions(CHAIN)
    np.testing.assert_array_equal(partitions[0], np.eye(4))
    inward = np.zeros((4, 4))
    inward[1, 0] = inward[1, 2] = inward[2, 3] = 1  # b feeds a and c, c feeds d: from nearer the centre
    outward = np.zeros((4, 4))
    outward[0, 1] = outward[2, 1] = outward[3, 2] = 1
    np.testing.assert_allclose(partitions[1], normalise_columns(inward))
    np.testing.assert_allclose(partitions[2], normalise_columns(outward))
    assert partitions[2][:, 1].tolist() == [0.5, 0, 0.5, 0]  # b averages what a and c send it


def test_graph_conv_mixes_only_neighbours():
    partitions = torch.from_numpy(spatial_partitions(CHAIN))
    conv = GraphConv(1, 1, partitions, adaptive=False)
    x = torch.zeros(1, 1, 1, 4)
    x[..., 0] = 1.0  # a signal on joint a only
    out = conv(x) - conv(torch.zeros_like(x))  # remove the bias
    assert out[0, 0, 0, 3].item() == pytest.approx(0.0)  # d is two bones away: untouched in one layer
    assert out[0, 0, 0, 0].abs().item() > 0 and out[0, 0, 0, 1].abs().item() > 0


def test_skeleton_input_streams():
    x = torch.randn(2, 5, 4, 3)
    features = skeleton_features(x, CHAIN, ("joint", "bone", "motion"))
    assert features.shape == (2, 9, 5, 4)
    bone = features[:, 3:6]
    torch.testing.assert_close(bone[:, :, :, 3], (x[:, :, 3] - x[:, :, 2]).permute(0, 2, 1))
    torch.testing.assert_close(bone[:, :, :, 1], torch.zeros(2, 3, 5))  # the root has no parent bone
    motion = features[:, 6:9]
    torch.testing.assert_close(motion[:, :, 0], (x[:, 1] - x[:, 0]).permute(0, 2, 1))
    torch.testing.assert_close(motion[:, :, -1], torch.zeros(2, 3, 4))
    with pytest.raises(ValueError):
        skeleton_features(x, CHAIN, ("velocity",))


def test_skeleton_gcn_shapes_and_learnable_graph():
    model = SkeletonGCN(UTD_KINECT_V1, 27, 32, widths=(16, 24), strides=(1, 2))
    embedding, logits = model(torch.randn(3, 32, 20, 3))
    assert embedding.shape == (3, model.embedding_dim) and logits.shape == (3, 27)
    logits.sum().backward()
    assert model.blocks[0].graph.offset.grad is not None  # the adaptive part of the graph is trained
    assert not any(name.endswith("partitions") for name, _ in model.named_parameters())
    with pytest.raises(ValueError):
        SkeletonGCN(UTD_KINECT_V1, 27, 32, inputs=())
