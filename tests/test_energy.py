"""energy_auc against closed forms and a naive O(n*m) count; the Energy protocol."""

import itertools

import pytest
import torch

from selfsup.energy import Energy, energy_auc


def naive_auc(compatible: torch.Tensor, incompatible: torch.Tensor) -> float:
    wins = 0.0
    for c, u in itertools.product(compatible.tolist(), incompatible.tolist()):
        wins += 1.0 if c < u else 0.5 if c == u else 0.0
    return wins / (len(compatible) * len(incompatible))


def test_perfectly_separated_is_one():
    assert energy_auc(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([3.0, 4.0])) == 1.0


def test_reversed_is_zero():
    assert energy_auc(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 1.0, 2.0])) == 0.0


def test_identical_energies_give_one_half():
    assert energy_auc(torch.full((5,), 0.3), torch.full((7,), 0.3)) == 0.5
    values = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert energy_auc(values, values.clone()) == pytest.approx(0.5, abs=1e-15)


def test_hand_computed_case_with_ties():
    # Pairs (c, u): (1,2) 1, (1,4) 1, (2,2) 1/2, (2,4) 1, (3,2) 0, (3,4) 1 -> 4.5 / 6.
    assert energy_auc(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0])) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", range(3))
def test_matches_naive_double_loop(seed):
    generator = torch.Generator().manual_seed(seed)
    compatible = torch.randn(37, generator=generator)
    incompatible = torch.randn(53, generator=generator) + 0.5
    assert energy_auc(compatible, incompatible) == pytest.approx(naive_auc(compatible, incompatible), abs=1e-12)
    # Integer-valued energies: many ties within and across the two groups.
    compatible = torch.randint(0, 6, (41,), generator=generator).float()
    incompatible = torch.randint(2, 8, (29,), generator=generator).float()
    assert energy_auc(compatible, incompatible) == pytest.approx(naive_auc(compatible, incompatible), abs=1e-12)


def test_infinite_energies_are_ranked():
    inf = float("inf")
    assert energy_auc(torch.tensor([-inf, 0.0]), torch.tensor([1.0, inf])) == 1.0
    assert energy_auc(torch.tensor([inf]), torch.tensor([inf])) == 0.5


def test_large_inputs_do_not_build_the_pair_matrix():
    # 10^6 x 10^6 pairs would need terabytes; ranking takes a fraction of a second.
    generator = torch.Generator().manual_seed(0)
    compatible = torch.randn(1_000_000, generator=generator)
    incompatible = torch.randn(1_000_000, generator=generator) + 1.0
    # Normal shift of 1 with unit variances: AUC = Phi(1 / sqrt(2)) = 0.7602.
    assert energy_auc(compatible, incompatible) == pytest.approx(0.7602, abs=2e-3)


@pytest.mark.parametrize(
    "compatible, incompatible",
    [
        (torch.tensor([0.0, float("nan")]), torch.tensor([1.0])),
        (torch.tensor([0.0]), torch.tensor([float("nan"), 1.0])),
    ],
)
def test_nan_is_an_error(compatible, incompatible):
    with pytest.raises(ValueError, match="NaN"):
        energy_auc(compatible, incompatible)


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="empty"):
        energy_auc(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="1-D"):
        energy_auc(torch.zeros(2, 2), torch.tensor([1.0]))


class NegativeCosine:
    """A minimal energy: -cos(x, y)."""

    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -torch.nn.functional.cosine_similarity(x, y, dim=1)


def test_energy_protocol_end_to_end():
    model = NegativeCosine()
    assert isinstance(model, Energy)
    assert not isinstance(object(), Energy)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=generator)
    view = x + 0.1 * torch.randn(64, 8, generator=generator)
    compatible = model.energy(x, view)
    incompatible = model.energy(x, view.roll(1, dims=0))
    assert compatible.shape == (64,)
    assert energy_auc(compatible, incompatible) > 0.99
