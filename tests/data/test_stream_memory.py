"""A streamed source's memory does not grow with the number of images: the peak resident set
of a process streaming one epoch of 5,000 images from shards is within 10% of one streaming
600 (decoded into memory, the 4,400 more 64 px RGB images would add about 52 MB, about 22%
of the process)."""

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.data.packing import pack_shards

SIZE = 64
BATCH = 256

# One epoch streamed by 2 DataLoader workers; the peak resident set (VmHWM) of this process
# alone: the workers are other processes.
STREAM_ONE_EPOCH = f"""
import sys, warnings
warnings.filterwarnings("ignore", message="This DataLoader will create")
from selfsup.data.images import inspect_source, open_stream
stream = open_stream(inspect_source(sys.argv[1]), channels=3, size={SIZE}, workers=2)
count = sum(len(batch.images) for batch in stream.epoch(0, 0, batch={BATCH}, world=1, rank=0))
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]
print(count, peak)
"""


def _png_folder(root: Path, count: int) -> Path:
    """``count`` 64x64 PNGs in 4 class folders: 64 cheap gradients' bytes written over and over."""
    ramp = np.linspace(0, 255, SIZE, dtype=np.float32)
    blobs = []
    for shade in range(64):
        pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.full((SIZE, SIZE), shade * 4.0), np.add.outer(ramp, -ramp) / 2 + 128], -1)
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "PNG")
        blobs.append(buffer.getvalue())
    for label in range(4):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
    for number in range(count):
        (root / f"class{number % 4}" / f"{number:05d}.png").write_bytes(blobs[number % len(blobs)])
    return root


def _streaming_peak_kb(shards: Path) -> tuple[int, int]:
    """(images streamed, peak resident kB) of a fresh process streaming one epoch of ``shards``."""
    done = subprocess.run([sys.executable, "-c", STREAM_ONE_EPOCH, str(shards)], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    count, peak = done.stdout.split()[-2:]
    return int(count), int(peak)


@pytest.mark.e2e
def test_streaming_memory_stays_flat_from_600_to_5000_images(tmp_path):
    peaks = {}
    for count in (600, 5_000):
        folder = _png_folder(tmp_path / f"images-{count}", count)
        packed = pack_shards(str(folder), tmp_path / f"shards-{count}", workers=0, progress=False)
        assert packed["samples"] == count
        streamed, peaks[count] = _streaming_peak_kb(tmp_path / f"shards-{count}")
        assert streamed == count // BATCH * BATCH  # the whole epoch went through this process
    growth_mb = (peaks[5_000] - peaks[600]) / 1024
    decoded_mb = 4_400 * 3 * SIZE * SIZE / 2**20  # what holding the extra images in memory would add
    assert peaks[5_000] <= 1.10 * peaks[600], (
        f"peak RSS {peaks[600] / 1024:.0f} MB at 600 images, {peaks[5_000] / 1024:.0f} MB at 5,000 "
        f"(+{growth_mb:.0f} MB; decoding the 4,400 more into memory would add {decoded_mb:.0f} MB)"
    )
