"""report.html: rendered from a real tiny run and opened in headless Chromium.

The browser test checks what a reader would see: the page loads from disk with no console
error, and every embedded figure decodes to a non-empty image laid out at non-zero size.
A probe script is added to the test's copy of the page only (the product has no scripts);
it records errors and image sizes in the DOM, which ``--dump-dom`` prints.
"""

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from selfsup import config as config_module
from selfsup.config import Config
from selfsup.report.html import render_report

_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', (e) => window.__errors.push(String(e.message || (e.target && e.target.src ? 'failed to load ' + e.target.tagName : e))), true);
const consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.join(' ')); consoleError(...args); };
window.addEventListener('load', () => {
  const sizes = Array.from(document.images, (i) => [i.naturalWidth, i.naturalHeight,
    Math.round(i.getBoundingClientRect().width), Math.round(i.getBoundingClientRect().height)]);
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({sizes: sizes, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def _tiny_png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1), dpi=20)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _run_input(run_dir: Path, name: str, data: dict | None) -> dict:
    """What :func:`render_report` takes for one run directory."""
    metrics = run_dir / "metrics.jsonl"
    skipped = run_dir / "skipped_files.txt"
    return {
        "name": name,
        "summary": json.loads((run_dir / "summary.json").read_text()),
        "config_yaml": (run_dir / "config.yaml").read_text(),
        "metrics": [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else [],
        "skipped": skipped.read_text() if skipped.is_file() else "",
        "data": data,
        "pictures": {},
    }


def _open_in_chromium(page: Path, tmp_path: Path) -> tuple[dict, str]:
    """Screenshot ``page`` (kept in ``tmp_path``), then load a probed copy and return the
    probe's record and Chromium's stderr (console messages)."""
    chromium = shutil.which("chromium")
    flags = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2000"]
    screenshot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=60, check=True)
    assert screenshot.stat().st_size > 10_000, "the screenshot is (nearly) blank"

    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>" + _PROBE, 1))
    done = subprocess.run([*flags, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                          capture_output=True, text=True, timeout=60, check=True)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, "the probe did not run: the page did not finish loading"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), done.stderr


@pytest.mark.e2e
def test_report_of_a_tiny_run_opens_in_chromium(tmp_path, tiny_overrides):
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian package `chromium`)")
    from selfsup.data import load_splits
    from selfsup.evaluate.report_data import image_report_data
    from selfsup.modalities.image import ImageModality
    from selfsup.runs import build_model, load_run, pretrain

    run_dir = tmp_path / "run"
    pretrain(config_module.apply_overrides(Config(), tiny_overrides + [f"out={run_dir}", "train.epochs=1"]))
    run = load_run(run_dir, torch.device("cpu"))
    config = run.config
    _, train, test = load_splits(config.data.source, config.data.channels, config.data.size)
    data = image_report_data(run.method, ImageModality().build_view_maker(config), train, test, torch.device("cpu"),
                             random_init=build_model(config), max_points=300)

    assert set(data["fewshot"]) == {"run", "raw_pixels", "random_init"}
    assert data["fewshot"]["run"]["shots"] == [1, 2, 5, 10, 20, 50, 100]
    assert data["retrieval"]["neighbours"].shape[:2] == (8, 8)
    assert len(data["map"]["points"]) == len(data["map"]["labels"]) == min(300, len(test))
    assert 0.0 <= data["energies"]["auc"] <= 1.0

    page = tmp_path / "report.html"
    page.write_text(render_report([_run_input(run_dir, "tiny <simclr>", data)]))
    text = page.read_text()
    assert "tiny &lt;simclr&gt;" in text and "<simclr>" not in text
    assert "http://" not in text and "https://" not in text, "the page must open with no network"
    for heading in ("Summary", "Training curves", "Energy", "Few-shot", "Retrieval", "Embedding map", "Collapse", "Skipped files"):
        assert f"<h2>{heading}</h2>" in text
    assert "largest class" in text and "<details>" in text

    probe, stderr = _open_in_chromium(page, tmp_path)
    assert probe["errors"] == []
    assert "Uncaught" not in stderr
    assert len(probe["sizes"]) >= 6
    for natural_w, natural_h, shown_w, shown_h in probe["sizes"]:
        assert min(natural_w, natural_h, shown_w, shown_h) > 0

    # Two runs side by side: one column group per run, curves overlaid in one figure.
    comparison = render_report([_run_input(run_dir, "first", data), _run_input(run_dir, "second", None)])
    assert "first: simclr" in comparison and "second: simclr" in comparison


def test_report_without_held_out_data_escapes_and_embeds_pictures():
    """A text-like run (no data dict): its summary, homonyms and pictures still render."""
    run = {
        "name": "<b>text</b>",
        "summary": {"method": "mlm", "modality": "text", "masked_accuracy": 0.25, "perplexity": 40.0, "linear_top1": 0.5,
                    "homonyms": {"words": {"bank": {"occurrences": 3, "mean_cosine": 0.4, "cosine_std": 0.1}}, "mean_cosine": 0.4},
                    "baselines": {"bag_of_words": {"linear_top1": 0.6}}},
        "config_yaml": "method:\n  name: mlm & <more>\n",
        "metrics": [{"step": 1, "kind": "train", "loss": 2.0}, {"step": 2, "kind": "train", "loss": 1.5}],
        "skipped": "",
        "data": None,
        "pictures": {"predictions.png": _tiny_png()},
        "fill_mask": [{"text": "the [MASK] sat", "predictions": ["cat", "dog"]}],
    }
    page = render_report([run])
    assert "&lt;b&gt;text&lt;/b&gt;" in page and "<b>text</b>" not in page
    assert "mlm &amp; &lt;more&gt;" in page
    assert "bank" in page and "bag_of_words" in page and "the [MASK] sat" in page
    assert "<h2>Retrieval</h2>" not in page
    images = re.findall(r'<img src="data:image/png;base64,[^"]+" width="(\d+)" height="(\d+)"', page)
    assert len(images) == 2 and all(int(w) > 0 and int(h) > 0 for w, h in images)  # the loss curve and the picture
