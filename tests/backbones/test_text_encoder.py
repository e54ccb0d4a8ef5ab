import math

import pytest
import torch

from selfsup.backbones import TransformerEncoder
from selfsup.backbones.transformer import attention_mask_for
from selfsup.losses import masked_lm

VOCAB = 50


def encoder(causal=False, bias=False, seed=0):
    torch.manual_seed(seed)
    return TransformerEncoder(VOCAB, width=32, depth=2, heads=4, max_length=16, causal=causal, bias=bias).double()


def random_ids(batch=3, length=10, seed=1):
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_output_dim():
    model = encoder()
    hidden = model(random_ids())
    assert model.output_dim == 32 and hidden.shape == (3, 10, 32)
    assert model.logits(hidden).shape == (3, 10, VOCAB)
    with pytest.raises(ValueError, match="max_length"):
        model(random_ids(length=17))


@pytest.mark.parametrize("padded", [False, True])
def test_layer_states_are_every_stage_and_end_with_the_output(padded):
    model, ids = encoder(), random_ids()
    mask = torch.ones_like(ids, dtype=torch.bool)
    if padded:
        mask[0, 6:] = False
    states = model.layer_states(ids, mask)
    assert len(states) == 2 + 2 and all(state.shape == (3, 10, 32) for state in states)
    assert torch.equal(states[-1], model(ids, mask))
    embedded = model.embedding_norm(model.token_embedding(ids) + model.position_embedding(torch.arange(10)))
    real = mask.unsqueeze(-1)
    assert torch.allclose(states[0] * real, embedded * real)  # the first stage: the summed embeddings
    assert torch.allclose(model.norm(states[-2]) * real, states[-1] * real)  # the last block, before the final norm


@pytest.mark.parametrize("with_mask", [False, True])
def test_causal_encoder_cannot_see_the_future_but_bidirectional_can(with_mask):
    ids = random_ids()
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 7) % (VOCAB - 1) + 1
    # An all-real attention mask must not drop the causal constraint (SDPA takes either a
    # mask or is_causal, so the two have to be combined by hand).
    mask = torch.ones_like(ids, dtype=torch.bool) if with_mask else None
    causal, bidirectional = encoder(causal=True), encoder(causal=False)
    with torch.no_grad():
        before, after = causal(ids, mask), causal(changed, mask)
        torch.testing.assert_close(before[:, :6], after[:, :6])
        assert not torch.allclose(before[:, 6:], after[:, 6:])
        before, after = bidirectional(ids, mask), bidirectional(changed, mask)
        assert not torch.allclose(before[:, :6], after[:, :6])


@pytest.mark.parametrize("causal", [False, True])
def test_padded_positions_do_not_reach_real_ones(causal):
    model = encoder(causal=causal)
    lengths = torch.tensor([10, 6, 3])
    ids = random_ids()
    mask = torch.arange(10) < lengths[:, None]
    garbage = torch.where(mask, ids, random_ids(seed=5))
    with torch.no_grad():
        padded = model(ids, mask)
        other = model(garbage, mask)
        assert torch.isfinite(padded).all()
        assert (padded[~mask] == 0).all()
        torch.testing.assert_close(padded[mask], other[mask])
        # Real positions equal a run on the unpadded sequence alone.
        for row, length in enumerate(lengths.tolist()):
            alone = model(ids[row : row + 1, :length])
            torch.testing.assert_close(padded[row, :length], alone[0])
        # Without the mask the padded contents do change the real outputs (bidirectional).
        if not causal:
            assert not torch.allclose(model(ids)[1, :6], model(garbage)[1, :6])


def test_left_padding_with_causal_mask_and_all_padding_rows_stay_finite():
    # With left padding a causal query may have no real key before it; an all-padding row
    # has none at all. Both must give finite outputs and leave the other rows untouched.
    model = encoder(causal=True)
    ids = random_ids()
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[0, :4] = False
    mask[2] = False
    hidden = model(ids, mask)
    assert torch.isfinite(hidden).all()
    hidden.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        torch.testing.assert_close(hidden[1], model(ids[1:2])[0])
        left = ids[0:1].clone()
        left[0, :4] = 3
        torch.testing.assert_close(hidden[0, 4:], model(left, mask[0:1])[0, 4:])


def naive_attention(attention, x, allowed):
    """softmax(Q K^T / sqrt(d) + mask) V per head, then the output projection."""
    width = x.shape[-1]
    heads = attention.heads
    head_dim = width // heads
    q, k, v = (x @ attention.qkv.weight.T).split(width, dim=-1)
    outputs = []
    for h in range(heads):
        part = slice(h * head_dim, (h + 1) * head_dim)
        scores = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(head_dim)
        scores = scores.masked_fill(~allowed, float("-inf"))
        outputs.append(torch.softmax(scores, dim=-1) @ v[..., part])
    return torch.cat(outputs, dim=-1) @ attention.out.weight.T


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_naive_softmax_attention(causal):
    model = encoder(causal=causal)
    attention = model.blocks[0].attention
    x = torch.randn(2, 7, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    padding = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    allowed = padding[:, None, :].expand(2, 7, 7).clone()
    if causal:
        allowed &= torch.ones(7, 7, dtype=torch.bool).tril()
    with torch.no_grad():
        fused = attention(x, attention_mask_for(padding, causal), causal)
        # Compared at real queries: a padded query also attends to itself (NaN guard).
        torch.testing.assert_close(fused[padding], naive_attention(attention, x, allowed)[padding])
        no_mask = torch.ones(2, 7, 7, dtype=torch.bool).tril() if causal else torch.ones(2, 7, 7, dtype=torch.bool)
        torch.testing.assert_close(attention(x, None, causal), naive_attention(attention, x, no_mask))


def test_output_projection_is_tied_to_the_input_embedding():
    model = encoder()
    assert model.output_weight() is model.token_embedding.weight
    ids = random_ids()
    targets = torch.full_like(ids, -100)
    targets[:, 2] = ids[:, 2]
    # Only the output path: hidden states are detached, so any gradient on the embedding
    # comes through the tied projection.
    hidden = model(ids).detach()
    masked_lm(hidden, targets, model.logits).backward()
    grad = model.token_embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    before = model.token_embedding.weight.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(before, model.token_embedding.weight)


def test_bert_initialisation_and_bias_switch():
    model = TransformerEncoder(1000, width=64, depth=1, heads=4, bias=True)
    assert model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(model.blocks[0].attention.qkv.bias) == 0
    assert torch.count_nonzero(model.output_bias) == 0
    crammed = TransformerEncoder(1000, width=64, depth=1, heads=4)
    assert crammed.output_bias is None
    assert all(module.bias is None for module in crammed.modules() if isinstance(module, torch.nn.Linear))
    assert not any(isinstance(module, torch.nn.Dropout) for module in crammed.modules())
