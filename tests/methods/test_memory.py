"""The ring buffer behind MoCo's queue, SwAV's queue and the latent-variable predictor's
bank, and the loading of checkpoints written before it existed."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from selfsup.backbones import build_backbone
from selfsup.backbones.video import ClipShape, FrameEncoder
from selfsup.methods import build_method
from selfsup.methods.memory import RingBuffer
from selfsup.train import checkpoint


def test_the_ring_keeps_the_newest_rows_and_counts_them():
    ring = RingBuffer(4, 2)
    assert len(ring) == 4 and ring.stored().shape == (0, 2) and not ring.full
    ring.push(torch.ones(3, 2))
    assert int(ring.count) == 3 and int(ring.next) == 3 and torch.equal(ring.stored(), torch.ones(3, 2))
    ring.push(torch.full((2, 2), 2.0))  # wraps: slot 3, then slot 0
    assert ring.full and int(ring.next) == 1
    assert torch.equal(ring.rows[:, 0], torch.tensor([2.0, 1.0, 1.0, 2.0]))
    ring.push(torch.arange(12.0).view(6, 2))  # more than the ring holds: the last 4, in order from slot 1
    assert torch.equal(ring.rows[:, 0], torch.tensor([10.0, 4.0, 6.0, 8.0])) and int(ring.next) == 1


def test_a_ring_can_start_full_and_an_empty_ring_ignores_pushes():
    initial = torch.randn(3, 2)
    ring = RingBuffer(3, 2, initial=initial)
    assert ring.full and torch.equal(ring.stored(), initial)
    empty = RingBuffer(0, (2, 5))
    empty.push(torch.ones(4, 2, 5))
    assert empty.rows.shape == (0, 2, 5) and int(empty.count) == 0


def _legacy_checkpoint(tmp_path, model, renames, extra):
    """Save ``model``'s state under the names an earlier version used."""
    state = {key: value.clone() for key, value in model.state_dict().items()}
    for new, old in renames.items():
        state[old] = state.pop(new)
    for key in [key for key in state if key.endswith((".count", ".next", ".rows"))]:
        del state[key]
    state.update(extra)
    path = tmp_path / checkpoint.checkpoint_name(1)
    path.mkdir()
    save_file(state, path / checkpoint.MODEL_FILE)
    (path / checkpoint.STATE_FILE).write_text(json.dumps({"step": 1}))
    return path


def _image_method(options):
    torch.manual_seed(0)
    backbone, dim = build_backbone("convnet-small", 1, width=4)
    return build_method(options, backbone, dim)


def test_moco_and_lvp_checkpoints_from_before_the_ring_still_load(tmp_path):
    moco = _image_method({"name": "moco-v2", "hidden_dim": 16, "projection_dim": 4, "queue_size": 6})
    queue = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    path = _legacy_checkpoint(tmp_path, moco, {}, {"queue": queue, "queue_position": torch.tensor(2)})
    fresh = _image_method({"name": "moco-v2", "hidden_dim": 16, "projection_dim": 4, "queue_size": 6})
    checkpoint.load_checkpoint(path, fresh)
    assert torch.equal(fresh.queue.rows, queue) and int(fresh.queue.next) == 2 and fresh.queue.full

    clip = ClipShape(2, 2, 1, 32)
    lvp = build_method({"name": "lvp", "z_dim": 3, "bank_size": 5, "hidden_dim": 8, "decoder_width": 4},
                       FrameEncoder(1, 32, 4, 8), 8, clip=clip)
    bank = torch.randn(5, 3)
    legacy = tmp_path / "lvp"
    legacy.mkdir()
    path = _legacy_checkpoint(legacy, lvp, {}, {"bank": bank, "bank_filled": torch.tensor(4), "bank_next": torch.tensor(4)})
    checkpoint.load_checkpoint(path, lvp)
    assert torch.equal(lvp.bank.stored(), bank[:4]) and int(lvp.bank.next) == 4


def test_swav_checkpoints_from_before_the_ring_load_oldest_first(tmp_path):
    options = {"name": "swav", "hidden_dim": 16, "projection_dim": 4, "prototypes": 5, "queue_size": 4}
    swav = _image_method(options)
    # The old queue held the newest batch first: batches b2 (newest), b1, then empty slots.
    newest, older = torch.randn(2, 1, 4).expand(2, 1, 4), torch.randn(2, 1, 4).expand(2, 1, 4)
    queue = torch.cat([newest, older, torch.zeros(2, 2, 4)], dim=1)
    path = _legacy_checkpoint(tmp_path, swav, {}, {"queue": queue, "queue_filled": torch.tensor(False)})
    checkpoint.load_checkpoint(path, swav)
    assert int(swav.queue.count) == 2 and int(swav.queue.next) == 2 and not swav.queue.full
    assert torch.equal(swav.queue.rows[0], older[:, 0]) and torch.equal(swav.queue.rows[1], newest[:, 0])
