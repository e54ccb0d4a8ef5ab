"""Collapse diagnostics against closed forms and naive reference formulas."""

import math

import pytest
import torch

from selfsup.evaluate.collapse import (
    CollapseThresholds,
    alignment,
    collapse_report,
    effective_rank,
    prototype_usage,
    std_sqrt_d,
    uniformity,
)


def gaussian(num_rows, dim, seed=0):
    return torch.randn(num_rows, dim, generator=torch.Generator().manual_seed(seed))


def test_identical_rows_are_collapsed():
    z = torch.tensor([[0.3, -1.0, 2.0, 0.5]]).repeat(100, 1)
    assert std_sqrt_d(z) == pytest.approx(0.0, abs=1e-12)
    assert effective_rank(z) == pytest.approx(1.0, abs=1e-4)
    report = collapse_report(z)
    assert report["collapsed"] is True
    assert len(report["reasons"]) == 2
    assert "std_sqrt_d" in report["reasons"][0] and "effective_rank" in report["reasons"][1]


def test_orthonormal_rows_closed_form():
    # Rows of the identity: each column holds one 1 among D entries, so its unbiased std is
    # exactly 1 / sqrt(D); all singular values are equal, so the effective rank is D.
    dim = 16
    z = torch.eye(dim)
    assert std_sqrt_d(z) == pytest.approx(1.0, abs=1e-12)
    assert effective_rank(z) == pytest.approx(dim, rel=1e-4)


def test_isotropic_gaussian_is_healthy():
    dim = 32
    z = gaussian(4000, dim)
    assert std_sqrt_d(z) == pytest.approx(1.0, abs=0.03)
    assert dim - 1.0 < effective_rank(z) <= dim
    report = collapse_report(z)
    assert report["collapsed"] is False and report["reasons"] == []
    assert report["alignment"] is None


def test_effective_rank_counts_directions_and_is_not_centred():
    basis = torch.linalg.qr(gaussian(64, 64, seed=1))[0][:, :3]  # 3 orthonormal directions
    z = gaussian(5000, 3, seed=2) @ basis.T
    assert effective_rank(z) == pytest.approx(3.0, abs=0.1)
    # A shared offset dominates the uncentred spectrum (RankMe does not centre).
    assert effective_rank(z + 100.0 * basis[:, 0]) < 1.2
    assert effective_rank(torch.zeros(10, 4)) == 0.0


def test_points_on_one_line_are_flagged_by_rank_only():
    direction = gaussian(1, 64, seed=3)
    signs = torch.tensor([1.0, -1.0]).repeat(500)[:, None]
    report = collapse_report(signs * direction)
    assert report["std_sqrt_d"] > CollapseThresholds().std_sqrt_d
    assert report["collapsed"] is True
    assert len(report["reasons"]) == 1 and report["reasons"][0].startswith("effective_rank")


def test_alignment_closed_forms():
    z = gaussian(50, 8)
    assert alignment(z, z) == pytest.approx(0.0, abs=1e-12)
    assert alignment(z, 3.0 * z) == pytest.approx(0.0, abs=1e-12)  # normalised first
    assert alignment(z, -z) == pytest.approx(4.0)
    orthogonal = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    assert alignment(*orthogonal) == pytest.approx(2.0)


def test_uniformity_of_two_antipodal_points():
    z = torch.tensor([[1.0, 0.0, 0.0], [-2.0, 0.0, 0.0]])
    assert uniformity(z, t=2) == pytest.approx(-8.0)
    assert uniformity(z[:1].repeat(5, 1)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("t", [1.0, 2.0, 5.0])
def test_uniformity_matches_naive_double_loop(t):
    z = gaussian(60, 5, seed=4).double()
    unit = z / z.norm(dim=1, keepdim=True)
    terms = [
        math.exp(-t * float((unit[i] - unit[j]).pow(2).sum())) for i in range(len(z)) for j in range(i + 1, len(z))
    ]
    assert uniformity(z, t=t) == pytest.approx(math.log(sum(terms) / len(terms)), abs=1e-10)


def test_uniformity_subsamples_deterministically():
    z = gaussian(300, 4, seed=5)
    subsampled = uniformity(z, max_samples=100)
    assert subsampled == uniformity(z, max_samples=100)
    assert subsampled == pytest.approx(uniformity(z), abs=0.1)
    assert subsampled != uniformity(z)
    assert uniformity(z, max_samples=300) == uniformity(z)


def test_report_with_pairs_and_custom_thresholds():
    z_a = gaussian(200, 8, seed=6)
    z_b = z_a + 0.1 * gaussian(200, 8, seed=7)
    report = collapse_report(z_a, z_a, z_b)
    assert set(report) == {"std_sqrt_d", "effective_rank", "alignment", "uniformity", "collapsed", "reasons"}
    assert report["alignment"] == pytest.approx(alignment(z_a, z_b))
    assert report["uniformity"] == pytest.approx(uniformity(z_a))
    strict = collapse_report(z_a, thresholds=CollapseThresholds(std_sqrt_d=1.5, effective_rank=2.0))
    assert strict["collapsed"] is True and "below 1.5" in strict["reasons"][0]


def test_bad_inputs_are_errors():
    z = gaussian(10, 4)
    with pytest.raises(ValueError, match="both"):
        collapse_report(z, z_a=z)
    with pytest.raises(ValueError, match="same shape"):
        alignment(z, z[:5])
    with pytest.raises(ValueError, match="NaN"):
        std_sqrt_d(torch.full((3, 2), float("nan")))
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(z[:1])


def test_prototype_usage_flags_a_single_prototype_and_uniform_assignments():
    healthy = torch.nn.functional.one_hot(torch.arange(100) % 20, 20).double() * 0.9 + 0.005
    report = prototype_usage(healthy)
    assert report["used"] == 20 and report["largest_share"] == pytest.approx(0.05)
    assert report["entropy"] == pytest.approx(1.0)  # 20 prototypes used equally, ln 20 / ln 20
    assert not report["collapsed"] and report["reasons"] == []

    single = torch.nn.functional.one_hot(torch.zeros(100, dtype=torch.long), 20).double()
    report = prototype_usage(single)
    assert report["used"] == 1 and report["largest_share"] == 1.0 and report["entropy"] == 0.0
    assert report["assignment_entropy"] == 0.0
    assert report["collapsed"] and "one prototype takes 100%" in report["reasons"][0]

    uniform = torch.full((100, 20), 1 / 20, dtype=torch.float64)
    report = prototype_usage(uniform)
    assert report["assignment_entropy"] == pytest.approx(1.0)
    assert report["collapsed"] and any("uniform" in reason for reason in report["reasons"])


def test_prototype_usage_rejects_bad_shapes():
    with pytest.raises(ValueError):
        prototype_usage(torch.ones(5, 1))
