"""saekit.features.match and .map: a known split is recovered from synthetic dictionaries (by decoder cosine
and by co-activation), and the map's coordinates are deterministic."""

from __future__ import annotations

import math

import pytest
import torch

from saekit import Sae, SaeConfig
from saekit.errors import FeatureError
from saekit.features.map import dominant_label, map_coordinates
from saekit.features.match import coactivation, decoder_cosine, split_tree

D = 32
COS_SPLIT2 = 0.8  # feature 0 of the small dictionary splits into two children at this cosine
COS_SPLIT3 = 0.9  # feature 1 splits into three


def dictionaries(seed: int = 0):
    """(small [8, D], large [11, D], parent of each large row): 0 -> two children, 1 -> three, 2..7 -> one each."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    E = Q.T  # orthonormal rows
    small = E[:8]
    s2, s3 = math.sqrt(1 - COS_SPLIT2**2), math.sqrt(1 - COS_SPLIT3**2)
    rows, parents = [], []
    rows += [COS_SPLIT2 * E[0] + s2 * E[8], COS_SPLIT2 * E[0] - s2 * E[8]]
    parents += [0, 0]
    for j in range(3):  # three unit vectors in the plane of E[9], E[10], 120 degrees apart
        ang = 2 * math.pi * j / 3
        rows.append(COS_SPLIT3 * E[1] + s3 * (math.cos(ang) * E[9] + math.sin(ang) * E[10]))
        parents.append(1)
    for i in range(2, 8):
        rows.append(E[i])
        parents.append(i)
    perm = torch.randperm(len(rows), generator=g)  # the larger dictionary's order is arbitrary
    large = torch.stack(rows)[perm]
    return small.float(), large.float(), [parents[int(p)] for p in perm]


def sae_with(W_FD: torch.Tensor) -> Sae:
    sae = Sae(SaeConfig(d_in=D, n_latents=W_FD.shape[0], k=1))
    with torch.no_grad():
        sae.W_dec.copy_(W_FD)
        sae.W_enc.copy_(W_FD)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def tokens_of(large: torch.Tensor, n: int = 4000, seed: int = 1) -> torch.Tensor:
    """Each token: one feature of the larger dictionary, magnitude in [1, 2]."""
    g = torch.Generator().manual_seed(seed)
    j = torch.randint(0, large.shape[0], (n,), generator=g)
    return large[j] * (1 + torch.rand(n, 1, generator=g))


def check_split(tree, parents):
    for child, parent in enumerate(parents):
        got = tree.edges[tree.edges.child == child]
        assert len(got) == 1 and int(got.parent.iloc[0]) == parent, (child, parent, got)
    assert tree.splits(0).to_dict() == {1: 3, 0: 2}


def test_decoder_cosine_recovers_the_split_with_its_cosines():
    small, large, parents = dictionaries()
    tree = split_tree([large, small], by="decoder", threshold=0.5)  # order of the inputs does not matter
    assert tree.widths == [8, 11]
    check_split(tree, parents)
    kids = tree.children(0, 0)
    assert len(kids) == 2 and kids.cosine.tolist() == pytest.approx([COS_SPLIT2] * 2, abs=1e-5)
    assert tree.children(0, 1).cosine.tolist() == pytest.approx([COS_SPLIT3] * 3, abs=1e-5)
    assert tree.children(0, 5).cosine.tolist() == pytest.approx([1.0], abs=1e-5)


def test_coactivation_recovers_the_split_on_a_shared_sample():
    small, large, parents = dictionaries()
    a, b = sae_with(small), sae_with(large)
    acts = tokens_of(large)
    tree = split_tree([a, b], acts, by="coactivation", threshold=0.2)
    check_split(tree, parents)
    kids = tree.children(0, 0)
    # e0 fires on both children's tokens, each child on half of them: correlation about sqrt(1/2)
    assert kids.coactivation.between(0.55, 0.85).all(), kids
    assert tree.children(0, 5).coactivation.iloc[0] > 0.95, "an unsplit feature fires exactly where its copy does"
    both = split_tree([a, b], acts, by="both")
    check_split(both, parents)
    node = both.descendants(1)
    assert node["feature"] == 1 and len(node["children"]) == 3 and all(c["cosine"] == pytest.approx(COS_SPLIT3, abs=1e-5) for c in node["children"])


def test_three_levels_and_unmatched_features():
    small, large, _ = dictionaries()
    g = torch.Generator().manual_seed(5)
    new = torch.randn(3, D, generator=g)
    new = new - (new @ large.T) @ torch.linalg.pinv(large.T)  # nearly orthogonal to everything before
    huge = torch.cat([large, new / new.norm(dim=1, keepdim=True)])
    tree = split_tree([small, large, huge], by="decoder", threshold=0.5)
    assert tree.widths == [8, 11, 14]
    assert set(tree.edges[tree.edges.level == 1].child) == set(range(11)), "the three new directions have no parent"
    d = tree.descendants(0)
    assert [len(c["children"]) for c in d["children"]] == [1, 1]


def test_similarities_and_errors():
    small, large, _ = dictionaries()
    assert decoder_cosine(small, small).diagonal().tolist() == pytest.approx([1.0] * 8, abs=1e-5)
    z = torch.rand(50, 3)
    c = coactivation(z, torch.cat([z[:, :1], torch.zeros(50, 1)], 1))
    assert c[0, 0] == pytest.approx(1.0, abs=1e-5) and c[1, 1] == 0 and c[:, 1].abs().max() == 0
    with pytest.raises(FeatureError, match="token sample"):
        split_tree([small, large])
    with pytest.raises(FeatureError, match="share a width"):
        split_tree([small, small], by="decoder")
    with pytest.raises(FeatureError, match="same hook point"):
        decoder_cosine(small, torch.randn(4, D + 1))


# -- the map ----------------------------------------------------------------------------------------


def test_pca_map_is_deterministic_and_separates_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, D, generator=g) * 3
    W = torch.cat([c + 0.3 * torch.randn(200, D, generator=g) for c in centres])
    xy = map_coordinates(W, seed=0)
    assert xy.shape == (600, 2) and xy.dtype == torch.float32
    assert torch.equal(xy, map_coordinates(W.clone(), seed=0)), "same input, same map"
    assert torch.equal(xy, map_coordinates(W[torch.arange(600)], seed=123)), "PCA does not depend on the seed"
    means = torch.stack([xy[i * 200 : (i + 1) * 200].mean(0) for i in range(3)])
    spread = torch.stack([xy[i * 200 : (i + 1) * 200].std(0).norm() for i in range(3)]).max()
    gaps = torch.cdist(means, means)[~torch.eye(3, dtype=torch.bool)]
    assert gaps.min() > 3 * spread, "clusters of directions stay apart on the map"
    assert torch.allclose(map_coordinates(-W), map_coordinates(-W)), "signs are fixed, not random"


def test_umap_map_is_deterministic_with_a_seed():
    pytest.importorskip("umap")
    g = torch.Generator().manual_seed(0)
    W = torch.randn(300, D, generator=g)
    a, b = map_coordinates(W, method="umap", seed=3), map_coordinates(W, method="umap", seed=3)
    assert torch.equal(a, b)


def test_map_errors_and_dominant_label():
    with pytest.raises(FeatureError, match="choose 'pca'"):
        map_coordinates(torch.randn(10, 4), method="tsne")
    lat = torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [0, 3.0, 0], [1.0, 1.0, 0]])
    lab, share = dominant_label(lat, torch.tensor([0, 0, 1, 2]), n_labels=3)
    assert lab.tolist() == [0, 1, -1]
    assert share.tolist() == pytest.approx([0.75, 0.75, 0.0])
