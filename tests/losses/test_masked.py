import math

import numpy as np
import pytest
import torch

from selfsup.losses import causal_lm, glove, masked_accuracy, masked_lm, sgns

VOCAB, DIM = 11, 6


def log_softmax_numpy(logits):
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def setup(seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 5, DIM, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(VOCAB, DIM, generator=generator, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, VOCAB, (3, 5), generator=generator)
    return hidden, weight, ids


def test_masked_lm_matches_cross_entropy_over_selected_positions():
    hidden, weight, ids = setup()
    targets = torch.full_like(ids, -100)
    selected = [(0, 1), (0, 4), (1, 0), (2, 2), (2, 3)]
    for b, t in selected:
        targets[b, t] = ids[b, t]
    h, w = hidden.detach().numpy(), weight.detach().numpy()
    expected = -sum(log_softmax_numpy(w @ h[b, t])[ids[b, t]] for b, t in selected) / len(selected)
    loss = masked_lm(hidden, targets, lambda rows: rows @ weight.T)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_masked_lm_projects_only_selected_rows_and_ignores_the_rest():
    hidden, weight, ids = setup(1)
    targets = torch.full_like(ids, -100)
    targets[1, 2], targets[2, 0] = ids[1, 2], ids[2, 0]
    seen = []

    def project(rows):
        seen.append(rows)
        return rows @ weight.T

    loss = masked_lm(hidden, targets, project)
    assert len(seen) == 1 and seen[0].shape == (2, DIM)
    torch.testing.assert_close(seen[0], hidden[[1, 2], [2, 0]])
    hidden_grad, weight_grad = torch.autograd.grad(loss, (hidden, weight))
    assert torch.count_nonzero(hidden_grad[targets == -100]) == 0
    # Changing an unselected position changes neither the loss nor the gradients.
    other = hidden.detach().clone()
    other[0] += 100.0
    other.requires_grad_(True)
    other_loss = masked_lm(other, targets, lambda rows: rows @ weight.T)
    other_hidden_grad, other_weight_grad = torch.autograd.grad(other_loss, (other, weight))
    assert other_loss.item() == loss.item()
    torch.testing.assert_close(other_weight_grad, weight_grad)
    torch.testing.assert_close(other_hidden_grad, hidden_grad)


def test_masked_lm_with_nothing_selected_is_a_zero_with_a_graph():
    hidden, weight, ids = setup(2)
    loss = masked_lm(hidden, torch.full_like(ids, -100), lambda rows: rows @ weight.T)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.count_nonzero(weight.grad) == 0


def test_masked_accuracy_counts_correct_arg_max_predictions():
    # Identity projection: the prediction is the arg-max coordinate of the hidden row.
    hidden = torch.eye(4)[None].repeat(2, 1, 1)  # position t predicts token t
    targets = torch.tensor([[0, 1, -100, 0], [-100, -100, 2, 3]])
    correct, count = masked_accuracy(hidden, targets, lambda rows: rows)
    assert (correct.item(), count.item()) == (4, 5)


def test_causal_lm_matches_a_next_token_loop_ignoring_padding():
    hidden, weight, ids = setup(3)
    ids = ids.clamp(min=1)
    ids[1, 3:] = 0  # padding at the end of the second sequence
    ids[2, 1] = 0
    h, w = hidden.detach().numpy(), weight.detach().numpy()
    terms = []
    for b in range(3):
        for t in range(4):
            if ids[b, t + 1] != 0:
                terms.append(-log_softmax_numpy(w @ h[b, t])[ids[b, t + 1]])
    loss = causal_lm(hidden, ids, lambda rows: rows @ weight.T)
    assert loss.item() == pytest.approx(np.mean(terms), rel=1e-12)
    # The last position predicts nothing: it gets no gradient.
    (grad,) = torch.autograd.grad(loss, hidden)
    assert torch.count_nonzero(grad[:, -1]) == 0


def sgns_numpy(center, context, negatives):
    def log_sigmoid(x):
        return -np.log1p(np.exp(-x))

    losses = []
    for b in range(center.shape[0]):
        loss = -log_sigmoid(context[b] @ center[b])
        for k in range(negatives.shape[1]):
            loss -= log_sigmoid(-(negatives[b, k] @ center[b]))
        losses.append(loss)
    return np.mean(losses)


def test_sgns_matches_the_paper_equation_and_closed_form():
    generator = torch.Generator().manual_seed(4)
    center, context = torch.randn(2, 4, DIM, generator=generator, dtype=torch.float64)
    negatives = torch.randn(4, 5, DIM, generator=generator, dtype=torch.float64)
    expected = sgns_numpy(center.numpy(), context.numpy(), negatives.numpy())
    assert sgns(center, context, negatives).item() == pytest.approx(expected, rel=1e-12)
    # Zero vectors: every sigma is 1/2, so the loss is (1 + K) log 2.
    zeros = torch.zeros(4, DIM)
    assert sgns(zeros, zeros, torch.zeros(4, 5, DIM)).item() == pytest.approx(6 * math.log(2), rel=1e-6)
    # Stable far from zero, where a naive log(sigmoid(x)) underflows to -inf.
    far = torch.full((1, 1), 200.0)
    assert sgns(far, -far, far[:, None]).item() == pytest.approx(2 * 40000.0, rel=1e-6)


def glove_numpy(word, context, word_bias, context_bias, counts, x_max=100.0, alpha=0.75):
    total = 0.0
    for i in range(word.shape[0]):
        weight = (counts[i] / x_max) ** alpha if counts[i] < x_max else 1.0
        total += weight * (word[i] @ context[i] + word_bias[i] + context_bias[i] - np.log(counts[i])) ** 2
    return total / word.shape[0]


def test_glove_matches_the_paper_equation():
    generator = torch.Generator().manual_seed(5)
    word, context = torch.randn(2, 6, DIM, generator=generator, dtype=torch.float64)
    word_bias, context_bias = torch.randn(2, 6, generator=generator, dtype=torch.float64)
    counts = torch.tensor([1.0, 3.0, 40.0, 100.0, 250.0, 7.5], dtype=torch.float64)
    arrays = [t.numpy() for t in (word, context, word_bias, context_bias, counts)]
    assert glove(word, context, word_bias, context_bias, counts).item() == pytest.approx(glove_numpy(*arrays), rel=1e-12)
    expected = glove_numpy(*arrays, x_max=10.0, alpha=0.5)
    assert glove(word, context, word_bias, context_bias, counts, x_max=10.0, alpha=0.5).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("count, weight", [(100.0, 1.0), (1000.0, 1.0), (10.0, 0.1**0.75), (1.0, 0.01**0.75)])
def test_glove_weighting_closed_form(count, weight):
    # Zero vectors and biases: the loss is f(X) (log X)^2.
    zeros = torch.zeros(1, DIM, dtype=torch.float64)
    bias = torch.zeros(1, dtype=torch.float64)
    loss = glove(zeros, zeros, bias, bias, torch.tensor([count], dtype=torch.float64))
    assert loss.item() == pytest.approx(weight * math.log(count) ** 2, rel=1e-12, abs=1e-15)
