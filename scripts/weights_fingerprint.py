"""Fingerprints of the weights that fixed-seed runs end with, to show that a change of the
code left training bit-for-bit unchanged (run before and after, then compare the lines).

    python scripts/weights_fingerprint.py [--methods simclr,mlm] [--out DIR]
    python scripts/weights_fingerprint.py --compare BEFORE_DIR AFTER_DIR

Every run goes through the command line in its own process with one thread, without
evaluation; each line names the method, the step reached and a SHA-256 over the tensors of
the newest checkpoint in key order (``by name``) and over their sorted contents alone
(``by value``, which survives a renamed buffer). ``--compare`` reads two ``--out`` folders
and says, run by run, whether every tensor of the first has a bit-identical tensor in the
second, and which tensors only one of them has.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.numpy import load_file

IMAGE = ["--data", "digits", "--epochs", "1", "--batch-size", "64", "eval.enabled=false"]
TEXT = ["--modality", "text", "--epochs", "1", "backbone.width=64", "backbone.depth=2", "text.max_length=64",
        "text.vocab_size=2000", "eval.enabled=false"]
VIDEO = ["--modality", "video", "--epochs", "3", "data.source=moving-sprites:digits", "video.clips=512",
         "video.test_clips=64", "video.frames_in=3", "video.frames_out=3", "video.size=32", "backbone.width=4",
         "train.batch_size=32", "eval.enabled=false"]
RUNS = {
    **{name: ["--method", name, *IMAGE] for name in (
        "simclr", "moco-v2", "moco-v3", "byol", "simsiam", "barlow-twins", "vicreg", "deepcluster-v2", "swav", "dino", "paws",
        "siamese-naive")},
    **{name: ["--method", name, *TEXT] for name in ("mlm", "mlm-wwm", "span", "causal", "word2vec", "glove")},
    **{name: ["--method", name, *IMAGE, "data.size=16"] for name in ("mae", "ijepa", "lejepa")},
    "swav-queue": ["--method", "swav", *IMAGE, "method.queue_size=128"],
    "lvp": ["--method", "lvp", *VIDEO, "method.z_dim=4"],
    "lvp-gan": ["--method", "lvp", *VIDEO, "method.z_dim=4", "method.conditioning=0.5", "method.regularizer=kl"],
    "jepa": ["--method", "jepa", *VIDEO],
}


def fingerprint(checkpoint: Path) -> tuple[str, str]:
    tensors = load_file(checkpoint / "model.safetensors")
    by_name = hashlib.sha256()
    for key in sorted(tensors):
        by_name.update(key.encode() + tensors[key].tobytes())
    contents = sorted(hashlib.sha256(t.tobytes()).hexdigest() for t in tensors.values())
    return by_name.hexdigest()[:16], hashlib.sha256("".join(contents).encode()).hexdigest()[:16]


def compare(before: Path, after: Path) -> None:
    print(f"{'run':<16} {'identical':>9}  {'changed':<28}  {'only before':<28}  {'only after'}")
    for run in sorted(p.name for p in before.iterdir() if (after / p.name).is_dir()):
        old, new = (load_file(sorted((root / run / "checkpoints").glob("step-*"))[-1] / "model.safetensors")
                    for root in (before, after))
        unclaimed = {key: hashlib.sha256(t.tobytes()).hexdigest() for key, t in new.items() if key not in old and t.size}
        matched, changed, only_before = 0, [], []
        for key, tensor in old.items():
            digest = hashlib.sha256(tensor.tobytes()).hexdigest()
            renamed = next((other for other, value in unclaimed.items() if value == digest), None) if tensor.size else None
            if key in new and new[key].shape == tensor.shape and new[key].tobytes() == tensor.tobytes():
                matched += 1
            elif renamed is not None:
                matched += 1  # the same values under another name
                del unclaimed[renamed]
            elif key in new:
                changed.append(key)
            else:
                only_before.append(key)
        only_after = [key for key in new if key not in old and (key in unclaimed or not new[key].size)]
        print(f"{run:<16} {matched:>4}/{len(old):<4}  {','.join(changed) or '-':<28}  {','.join(only_before) or '-':<28}  "
              f"{','.join(only_after) or '-'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(RUNS), help="comma-separated subset of: " + ", ".join(RUNS))
    parser.add_argument("--out", type=Path, help="keep the run directories here (default: a temporary folder)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="compare two --out folders")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    root = args.out or Path(tempfile.mkdtemp(prefix="fingerprint-"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    print(f"{'run':<16} {'step':>6}  {'by name':<16}  {'by value':<16}")
    for name in args.methods.split(","):
        out = root / name
        command = [sys.executable, "-m", "selfsup.cli", "pretrain", *RUNS[name], "--seed", "0", "--out", str(out)]
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        latest = sorted((out / "checkpoints").glob("step-*"))[-1]
        print(f"{name:<16} {int(latest.name.split('-')[1]):>6}  {'  '.join(fingerprint(latest))}", flush=True)


if __name__ == "__main__":
    main()
