"""Quantizer internals: k-means, RQ-VAE, RQ-KMeans, CMSA fusion, SID assignment and the SID table on disk."""

from __future__ import annotations

import pytest
import torch

from deepinterestgr.quantize.fusion import CMSAFusion
from deepinterestgr.quantize.kmeans import capacity_assign, kmeans, sinkhorn_assign, squared_distances
from deepinterestgr.quantize.metrics import code_table_metrics, collapsed_levels, collision_rate
from deepinterestgr.quantize.rqkmeans import RQKMeans
from deepinterestgr.quantize.rqvae import RQVAE, rotate_to
from deepinterestgr.quantize.sid import NO_SUFFIX, SIDTable, assign_sids


def blobs(n_per: int = 40, k: int = 8, d: int = 16, seed: int = 0, spread: float = 0.05):
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=-1) * 3
    x = centers.repeat_interleave(n_per, 0) + spread * torch.randn(k * n_per, d, generator=g)
    return x, torch.arange(k).repeat_interleave(n_per)


def purity(assignment: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of items whose cluster's majority label is their own label."""
    hits = 0
    for c in assignment.unique():
        members = labels[assignment == c]
        hits += int(torch.bincount(members).max())
    return hits / len(labels)


# ------------------------------------------------------------------------------------------------------ k-means
def test_kmeans_plusplus_recovers_separated_clusters():
    x, labels = blobs()
    result = kmeans(x, 8, iters=20, generator=torch.Generator().manual_seed(1))
    assert purity(result.assignment, labels) == 1.0
    assert torch.unique(result.assignment).numel() == 8


def crowded(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 4, generator=g)
    x[:400] *= 0.05  # most points crowd one centroid
    return squared_distances(x, torch.randn(16, 4, generator=g))


def test_capacity_assignment_is_exactly_balanced_and_prefers_near_codes():
    dist = crowded()
    assert torch.bincount(dist.argmin(1), minlength=16).max() > 100
    assignment = capacity_assign(dist, capacity=32)
    assert torch.bincount(assignment, minlength=16).tolist() == [32] * 16
    # with room for everyone, it is the nearest-code assignment
    assert torch.equal(capacity_assign(dist, capacity=512), dist.argmin(1))
    with pytest.raises(ValueError, match="cannot hold"):
        capacity_assign(dist, capacity=31)


def test_sinkhorn_assignment_spreads_crowded_points():
    dist = crowded()
    plain = torch.bincount(dist.argmin(1), minlength=16)
    balanced = torch.bincount(sinkhorn_assign(dist, epsilon=0.01, iters=200), minlength=16)
    assert balanced.max() < plain.max() / 4 and (balanced > 0).all()


# ------------------------------------------------------------------------------------------------------ RQ-VAE
def small_rqvae(**kw) -> RQVAE:
    return RQVAE(**{"input_dim": 16, "hidden_dims": (32,), "latent_dim": 8, "num_levels": 3, "codebook_size": 8,
                    "kmeans_iters": 10, **kw})


def test_rqvae_kmeans_init_on_first_training_batch_uses_every_code():
    torch.manual_seed(0)
    x, _ = blobs()
    q = small_rqvae()
    before = q.codebooks.detach().clone()
    assert not bool(q.initialized)
    q.train()
    q(x)  # first training batch: k-means init of every level
    assert bool(q.initialized)
    assert not torch.equal(before, q.codebooks.detach())
    q.eval()
    codes = q.encode(x)
    assert torch.unique(codes[:, 0]).numel() == 8  # 8 separated blobs -> all 8 level-0 codes used


def test_rqvae_round_trip_in_eval():
    torch.manual_seed(0)
    x, _ = blobs()
    q = small_rqvae(sinkhorn_epsilon=0.01)
    q.fit(x)
    q.eval()
    out = q(x)
    assert torch.allclose(out.quantized, q.decode_codes(out.codes))
    assert q.reconstruct(out.codes).shape == x.shape


def test_rqvae_trains_reconstruction_down():
    torch.manual_seed(0)
    x, _ = blobs(k=16, n_per=16, d=16, spread=0.3)
    q = small_rqvae()
    q.fit(x)
    opt = torch.optim.Adam(q.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        out = q(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else float(out.metrics["recon_loss"])
    assert float(out.metrics["recon_loss"]) < 0.5 * first


def test_rotation_trick_forward_value_and_gradient():
    z = torch.randn(5, 8, requires_grad=True)
    e = torch.randn(5, 8)
    out = rotate_to(z, e)
    assert torch.allclose(out, e, atol=1e-5)
    out.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    q = small_rqvae(rotation_trick=True)
    x, _ = blobs()
    q.fit(x)
    q.train()
    out = q(x)
    out.loss.backward()
    assert q.encoder[0].weight.grad.abs().sum() > 0


def test_dead_codes_are_restarted():
    torch.manual_seed(0)
    x, _ = blobs()
    q = small_rqvae()
    q.fit(x)
    q.codebooks.data[0, :4] = 100.0  # four level-0 codes no item can reach
    q.eval()
    assert torch.unique(q.encode(x)[:, 0]).numel() <= 4
    stats = q.refresh(x)
    assert stats["restarted_l0"] == 4
    assert torch.unique(q.encode(x)[:, 0]).numel() > 4


def test_rqvae_codes_deterministic_for_a_fixed_seed():
    x, _ = blobs()

    def run():
        torch.manual_seed(3)
        q = small_rqvae(seed=5)
        q.fit(x)
        q.eval()
        return q.encode(x)

    assert torch.equal(run(), run())


def test_rqvae_needs_its_input_width():
    q = RQVAE(hidden_dims=(8,), latent_dim=4, codebook_size=4)
    with pytest.raises(RuntimeError, match="build"):
        q(torch.randn(3, 5))
    q.build(5)
    with pytest.raises(ValueError, match="width 5"):
        q.build(6)


# ---------------------------------------------------------------------------------------------------- RQ-KMeans
def test_rqkmeans_residual_levels_shrink_the_error():
    x, _ = blobs(spread=0.5)
    errors = []
    for levels in (1, 2, 3):
        q = RQKMeans(num_levels=levels, codebook_size=8, seed=0)
        q.fit(x)
        errors.append(float(q(x).metrics["recon_loss"]))
    assert errors[0] > errors[1] > errors[2]


def lump(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([0.02 * torch.randn(300, 8, generator=g), torch.randn(100, 8, generator=g)])  # one dense lump


def test_rqkmeans_balanced_gives_equal_size_codes():
    x = lump()
    plain, balanced = RQKMeans(num_levels=2, codebook_size=16), RQKMeans(num_levels=2, codebook_size=16, balanced=True)
    plain.fit(x)
    balanced.fit(x)
    assert torch.bincount(plain.encode(x)[:, 0], minlength=16).max() > 200
    assert torch.bincount(balanced.encode(x)[:, 0], minlength=16).tolist() == [25] * 16


@pytest.mark.parametrize("make", [
    lambda distinct: RQKMeans(num_levels=3, codebook_size=16, distinct_last_level=distinct),
    lambda distinct: RQVAE(input_dim=8, hidden_dims=(16,), latent_dim=8, num_levels=3, codebook_size=16,
                           distinct_last_level=distinct),
], ids=["rqkmeans", "rqvae"])
def test_distinct_last_level_removes_prefix_collisions(make):
    x = lump()
    rates = []
    for distinct in (False, True):
        torch.manual_seed(0)
        q = make(distinct)
        q.fit(x)
        q.eval()
        out = q(x)
        assert torch.allclose(out.quantized, q.decode_codes(out.codes))
        rates.append(collision_rate(out.codes))
    assert rates[1] < rates[0]
    # every group of items sharing the first two codes, up to the codebook size, got distinct last codes
    _, inverse, counts = torch.unique(out.codes[:, :2], dim=0, return_inverse=True, return_counts=True)
    for g in (counts <= 16).nonzero().squeeze(1).tolist():
        last = out.codes[inverse == g, 2]
        assert torch.unique(last).numel() == len(last)
    # groups larger than the codebook use codes as evenly as possible
    for g in (counts > 16).nonzero().squeeze(1).tolist():
        assert torch.bincount(out.codes[inverse == g, 2], minlength=16).max() <= -(-int(counts[g]) // 16)


def test_rqkmeans_requires_fit():
    with pytest.raises(RuntimeError, match="fit"):
        RQKMeans(input_dim=4)(torch.randn(2, 4))


# ---------------------------------------------------------------------------------------------------- fusion
def test_cmsa_fusion_shapes_bias_free_and_starts_from_text():
    fusion = CMSAFusion(text_dim=12, image_dim=20, image_proj_dim=6)
    text = torch.nn.functional.normalize(torch.randn(4, 12), dim=-1)
    out = fusion(text, torch.zeros(4, 20))
    assert out.shape == (4, 12)
    assert torch.allclose(out, text, atol=1e-6)  # W_f = [I | 0]; a missing image (zero row) adds nothing
    assert fusion.w_v.bias is None and fusion.w_f.bias is None
    assert fusion.w_v.weight.shape == (6, 20) and fusion.w_f.weight.shape == (12, 18)
    with pytest.raises(ValueError, match="image 20"):
        fusion(text, torch.zeros(4, 7))


def test_cmsa_input_reconstruction_penalises_a_constant_fused_vector():
    fusion = CMSAFusion(text_dim=12, image_dim=20, image_proj_dim=6)
    text = torch.nn.functional.normalize(torch.randn(64, 12), dim=-1)
    image = torch.randn(64, 20).relu()
    with torch.no_grad():  # the best linear read-out of the text part from the text itself is exact
        fusion.readout.weight.zero_()
        fusion.readout.weight[:12] = torch.eye(12)
    fused = fusion(text, torch.zeros(64, 20))
    informative = fusion.input_reconstruction_loss(text, image, fused)
    constant = fusion.input_reconstruction_loss(text, image, fused[:1].expand(64, -1))
    assert informative < constant
    assert float(informative) == pytest.approx(1.0, abs=1e-4)  # only the unit-norm image part is left unexplained
    loss = fusion.input_reconstruction_loss(text, image, fusion(text, image))
    loss.backward()
    assert fusion.w_v.weight.grad is not None and fusion.w_f.weight.grad.abs().sum() > 0


def test_code_table_metrics_report_prefix_collisions_perplexity_shares_and_collapse():
    codes = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 1, 1], [0, 2, 2]])
    m = code_table_metrics(codes, codebook_size=8)
    assert m["prefix_collision_rate"] == [1.0, 0.5, 0.0]
    assert m["perplexity"][0] == pytest.approx(1.0)
    assert m["perplexity_share"][0] == pytest.approx(1 / 4)  # ceiling: min(8 codes, 4 items)
    assert collapsed_levels(m, 0.3) == [0] and collapsed_levels(m, 0.2) == []


# ---------------------------------------------------------------------------------------------------- SIDs
def test_assign_sids_resolves_collisions_to_unique_deterministic_sids():
    codes = torch.tensor([[1, 2, 3], [1, 2, 3], [0, 0, 0], [1, 2, 3], [0, 0, 1]])
    table = assign_sids(codes, codebook_size=4)
    assert table.suffix.tolist() == [0, 1, NO_SUFFIX, 2, NO_SUFFIX]
    table.check_unique()
    assert table.collision_rate() == pytest.approx(3 / 5)
    assert torch.equal(assign_sids(codes, codebook_size=4).full(), table.full())
    assert table.to_strings()[1] == "<a_1><b_2><c_3><d_1>"
    metrics = code_table_metrics(codes, 4)
    assert metrics["collision_rate"] == pytest.approx(3 / 5) and metrics["max_group_size"] == 3


def test_sid_table_save_load_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    table = assign_sids(torch.randint(0, 3, (50, 3), generator=g), codebook_size=3, meta={"config_hash": "abc"})
    table.save(tmp_path)
    loaded = SIDTable.load(tmp_path)
    assert torch.equal(loaded.codes, table.codes) and torch.equal(loaded.suffix, table.suffix)
    assert loaded.codes.dtype == torch.long and loaded.codebook_size == 3 and loaded.meta == {"config_hash": "abc"}
