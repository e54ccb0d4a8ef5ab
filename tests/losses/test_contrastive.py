import math

import numpy as np
import pytest
import torch

from selfsup.losses import info_nce, negative_cosine


def nt_xent_numpy(z_a: np.ndarray, z_b: np.ndarray, temperature: float) -> float:
    """NT-Xent written from SimCLR's eq. 1 with explicit loops over the 2N anchors."""
    z = np.concatenate([z_a, z_b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z_a)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        numerator = math.exp(z[i] @ z[j] / temperature)
        denominator = sum(math.exp(z[i] @ z[k] / temperature) for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_info_nce_matches_numpy_reference(temperature):
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(2, 12, 7, generator=generator, dtype=torch.float64)
    expected = nt_xent_numpy(z_a.numpy(), z_b.numpy(), temperature)
    assert info_nce(z_a, z_b, temperature).item() == pytest.approx(expected, rel=1e-10)


def test_info_nce_closed_form_orthogonal_views():
    # 2N = 4 views: the positive pairs are identical, the two images orthogonal.
    # Each anchor: positive s = 1, negatives s = 0 (twice), so l = -log(e^(1/T) / (e^(1/T) + 2)).
    temperature = 0.5
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 2))
    assert info_nce(z_a, z_a.clone(), temperature).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_is_scale_invariant_and_symmetric():
    z_a, z_b = torch.randn(2, 8, 5, generator=torch.Generator().manual_seed(1))
    assert info_nce(3 * z_a, z_b).item() == pytest.approx(info_nce(z_a, z_b).item(), rel=1e-5)
    assert info_nce(z_b, z_a).item() == pytest.approx(info_nce(z_a, z_b).item(), rel=1e-5)


def test_info_nce_collapsed_embeddings_give_log_of_negatives():
    # All embeddings equal: every logit is the same, loss = log(2N - 1).
    z = torch.ones(6, 4)
    assert info_nce(z, z.clone(), 0.2).item() == pytest.approx(math.log(11), rel=1e-6)


def test_info_nce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape|one shape"):
        info_nce(torch.randn(4, 3), torch.randn(5, 3))


def test_negative_cosine_values_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    z = torch.tensor([[2.0, 0.0], [0.0, -1.0]], requires_grad=True)
    loss = negative_cosine(p, z)
    assert loss.item() == pytest.approx(0.0)  # cos = +1 and -1
    loss.backward()
    assert z.grad is None and p.grad is not None
    z.grad = None
    negative_cosine(p, z, stop_gradient=False).backward()
    assert z.grad is not None
