"""``report.html``: one self-contained page per run, or several runs side by side.

The page opens from disk with no network: its figures are matplotlib PNGs embedded as
base64 ``<img>`` (every one with width and height), its style is inline CSS, and it has no
scripts. matplotlib rather than plotly: static PNGs keep a page of a dozen figures at a few
hundred kilobytes and need no 3.5 MB inlined script, the figures print and diff as
pictures, and nothing has to run in the browser for the page to show.

:func:`render_report` takes, per run, a dict with ``name``, ``summary`` (``summary.json``),
``config_yaml`` (text), ``metrics`` (rows of ``metrics.jsonl``), ``skipped`` (text of
``skipped_files.txt``), ``data`` (:func:`selfsup.evaluate.report_data.image_report_data`,
or ``None`` for text and video runs) and ``pictures`` (name -> PNG bytes), and optionally
``fill_mask`` (``[{"text", "predictions"}]`` for text runs). Sections without numbers
are left out, so a text run's page has no retrieval grid and an image run's no homonyms.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["render_report"]

_DPI = 100
_CURVES = (  # (metrics.jsonl key, row kind, title)
    ("loss", "train", "loss"),
    ("lr", "train", "learning rate"),
    ("std_sqrt_d", "train", "std · √d"),
    ("effective_rank", "train", "effective rank"),
    ("knn_top1", "eval", "online kNN top-1"),
    ("images_per_second", "train", "images / s"),
)
_ACCURACY_ROWS = (  # (label, getter on a summary or baseline dict)
    ("kNN top-1 (k=20)", lambda s: s.get("knn_top1")),
    ("kNN top-1 (k=200)", lambda s: s.get("knn200_top1")),
    ("linear probe top-1", lambda s: s.get("linear_top1")),
    ("1-shot", lambda s: (s.get("fewshot") or {}).get("1")),
    ("10-shot", lambda s: (s.get("fewshot") or {}).get("10")),
    ("100-shot", lambda s: (s.get("fewshot") or {}).get("100")),
    ("energy AUC", lambda s: s.get("energy_auc")),
)
_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
.scroll { overflow-x: auto; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .85em; }
.note { color: #666; font-size: .9em; }
"""


# ---------------------------------------------------------------------------- helpers
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any, percent: bool = True) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{100 * value:.1f}%" if percent else f"{value:.4g}"
    return _e(value)


def _figure(draw: Callable[[Any], None], panels: int, width: float = 4.0, height: float = 3.0, cols: int | None = None) -> str:
    """Draw ``panels`` axes with ``draw(axes)`` and return an ``<img>`` of the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = cols or min(panels, 3)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), dpi=_DPI, squeeze=False)
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.set_visible(False)
    try:
        draw(flat[:panels])
        fig.tight_layout()
        return _png_img(_to_png(fig))
    finally:
        plt.close(fig)


def _to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _png_img(png: bytes, alt: str = "figure") -> str:
    width, height = _png_size(png)
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" alt="{_e(alt)}">'


def _as_image(image) -> Any:
    """uint8 ``[C, H, W]`` tensor -> array for ``imshow`` (grey or RGB)."""
    array = image.permute(1, 2, 0).numpy() if hasattr(image, "permute") else image
    return array[..., 0] if array.shape[-1] == 1 else array[..., :3]


# ---------------------------------------------------------------------------- sections
def _largest_class(data: dict | None) -> float | None:
    """Share of the most frequent test label: the accuracy of always guessing it."""
    labels = (data or {}).get("labels")
    if not labels:
        return None
    counts: dict[int, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return max(counts.values()) / len(labels)


def _summary_table(runs: Sequence[dict]) -> str:
    """Metrics against raw pixels and random init, one column group per run."""
    columns: list[tuple[str, dict]] = []
    for run in runs:
        summary = run["summary"]
        prefix = f"{run['name']}: " if len(runs) > 1 else ""
        columns.append((f"{prefix}{summary.get('method', 'run')}", summary))
        for key, label in (("raw_pixels", "raw pixels"), ("random_init", "random init")):
            baseline = (summary.get("baselines") or {}).get(key)
            if baseline:
                columns.append((prefix + label, baseline))
    head = "".join(f"<th>{_e(name)}</th>" for name, _ in columns)
    body = []
    for label, get in _ACCURACY_ROWS:
        cells = [get(values) for _, values in columns]
        if any(c is not None for c in cells):
            body.append(f"<tr><td>{_e(label)}</td>" + "".join(f"<td>{_number(c)}</td>" for c in cells) + "</tr>")
    shares = [_largest_class(run.get("data")) for run in runs]
    if any(s is not None for s in shares):
        cells = []
        for run, share in zip(runs, shares):
            group = 1 + sum(1 for k in ("raw_pixels", "random_init") if (run["summary"].get("baselines") or {}).get(k))
            cells.append(f'<td colspan="{group}" style="text-align: center">{_number(share)}</td>')
        body.append('<tr><td>largest class (always guess it)</td>' + "".join(cells) + "</tr>")
    if not body:
        return '<p class="note">no accuracy metrics in the summary.</p>'
    return f'<div class="scroll"><table><thead><tr><th>metric</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _run_table(runs: Sequence[dict]) -> str:
    """What ran and where the time went: data loading, training, evaluation."""
    rows = (
        ("method", "method", False), ("data", "data", False), ("backbone", "backbone", False), ("steps", "steps", False),
        ("epochs", "epochs", False), ("images / s", "images_per_second", False), ("stopped by", "stopped_by", False),
        ("data loading (s)", "data_seconds", False), ("training (s)", "seconds", False), ("evaluation (s)", "evaluation_seconds", False),
        ("collapse alarm at step", "collapse_alarm_step", False), ("skipped files", "skipped_files", False),
    )
    head = "".join(f"<th>{_e(run['name'])}</th>" for run in runs)
    body = []
    for label, key, _ in rows:
        values = [run["summary"].get(key) for run in runs]
        if any(v is not None for v in values):
            body.append(f"<tr><td>{_e(label)}</td>" + "".join(f"<td>{_number(v, percent=False)}</td>" for v in values) + "</tr>")
    return f'<div class="scroll"><table><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _config(runs: Sequence[dict]) -> str:
    return "".join(
        f"<details><summary>config of {_e(run['name'])}</summary><pre>{_e(run.get('config_yaml') or '')}</pre></details>" for run in runs
    )


def _curves(runs: Sequence[dict]) -> str:
    """Training curves from ``metrics.jsonl``, the runs overlaid."""
    series = []
    for key, kind, title in _CURVES:
        lines = []
        for run in runs:
            points = [(row["step"], row[key]) for row in run.get("metrics") or []
                      if row.get("kind", "train") == kind and isinstance(row.get(key), (int, float))]
            if points:
                lines.append((run["name"], points))
        if lines:
            series.append((title, lines))
    if not series:
        return '<p class="note">no training metrics were logged.</p>'

    def draw(axes):
        for ax, (title, lines) in zip(axes, series):
            for name, points in lines:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=name, marker="." if len(points) < 20 else None)
            ax.set_title(title)
            ax.set_xlabel("step")
            if len(runs) > 1:
                ax.legend(fontsize="small")

    return _figure(draw, len(series))


def _with_data(runs: Sequence[dict], key: str) -> list[tuple[str, Any]]:
    return [(run["name"], run["data"][key]) for run in runs if run.get("data") and key in run["data"]]


def _energy(runs: Sequence[dict]) -> str:
    items = _with_data(runs, "energies")
    if not items:
        return ""

    def draw(axes):
        for ax, (name, e) in zip(axes, items):
            bins = 40
            ax.hist(e["compatible"], bins=bins, alpha=0.6, label="compatible (two views of one image)", density=True)
            ax.hist(e["incompatible"], bins=bins, alpha=0.6, label="incompatible (views of two images)", density=True)
            ax.set_title(f"{name}: energy AUC {e['auc']:.3f}")
            ax.set_xlabel("energy F(x, y)")
            ax.legend(fontsize="small")

    return "<h2>Energy</h2>" + _figure(draw, len(items), width=5.0)


def _fewshot(runs: Sequence[dict]) -> str:
    items = _with_data(runs, "fewshot")
    if not items:
        return ""
    labels = {"run": "this run", "raw_pixels": "raw pixels", "random_init": "random init"}

    def draw(axes):
        for ax, (name, curves) in zip(axes, items):
            for key, curve in curves.items():
                ax.errorbar(curve["shots"], curve["mean"], yerr=curve["std"], marker="o", capsize=2, label=labels.get(key, key))
            ax.set_xscale("log")
            ax.set_xticks(curves["run"]["shots"], [str(s) for s in curves["run"]["shots"]])
            ax.set_xlabel("labels per class")
            ax.set_ylabel("test top-1")
            ax.set_title(name)
            ax.legend(fontsize="small")

    return "<h2>Few-shot</h2>" + _figure(draw, len(items), width=5.0, height=3.5)


def _retrieval(runs: Sequence[dict]) -> str:
    """Held-out queries (first column) and their nearest training images, framed green
    where the label agrees with the query's and red where it does not."""
    items = _with_data(runs, "retrieval")
    if not items:
        return ""
    parts = ["<h2>Retrieval</h2>", '<p class="note">first column: held-out query; then its nearest training images by cosine '
             "similarity, framed green where the label agrees, red where it does not.</p>"]
    for name, r in items:
        queries, neighbours = r["queries"], r["neighbours"]
        q, k = neighbours.shape[0], neighbours.shape[1]

        def draw(axes, queries=queries, neighbours=neighbours, agree=r["agree"], q=q, k=k):
            for i in range(q):
                for j in range(k + 1):
                    ax = axes[i * (k + 1) + j]
                    image = queries[i] if j == 0 else neighbours[i, j - 1]
                    ax.imshow(_as_image(image), cmap="gray")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    colour = "black" if j == 0 else ("#2a2" if agree[i][j - 1] else "#d22")
                    for spine in ax.spines.values():
                        spine.set_edgecolor(colour)
                        spine.set_linewidth(3)

        parts.append(f"<h3>{_e(name)}</h3>" + _figure(draw, q * (k + 1), width=0.9, height=0.9, cols=k + 1))
    return "".join(parts)


def _map(runs: Sequence[dict]) -> str:
    items = _with_data(runs, "map")
    if not items:
        return ""

    def draw(axes):
        for ax, (name, m) in zip(axes, items):
            xs = [p[0] for p in m["points"]]
            ys = [p[1] for p in m["points"]]
            labels = m["labels"]
            classes = sorted(set(labels))
            cmap = "tab10" if len(classes) <= 10 else "tab20"
            scatter = ax.scatter(xs, ys, c=labels, cmap=cmap, s=6)
            if 1 < len(classes) <= 20:
                ax.legend(*scatter.legend_elements(), fontsize="x-small", loc="best", markerscale=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: t-SNE of held-out features")

    return "<h2>Embedding map</h2>" + _figure(draw, len(items), width=5.0, height=4.5)


def _collapse(runs: Sequence[dict]) -> str:
    spectra = _with_data(runs, "spectrum")
    prototypes = _with_data(runs, "prototypes")
    parts = []
    rows = []
    for run in runs:
        c = run["summary"].get("collapse")
        if c:
            reasons = "; ".join(c.get("reasons") or []) or "none"
            rows.append(f"<tr><td>{_e(run['name'])}</td><td>{_number(c.get('std_sqrt_d'), False)}</td>"
                        f"<td>{_number(c.get('effective_rank'), False)}</td><td>{_e(reasons)}</td></tr>")
    if rows:
        parts.append("<table><thead><tr><th>run</th><th>std·√d</th><th>effective rank</th><th>collapse alarms</th></tr></thead>"
                     f"<tbody>{''.join(rows)}</tbody></table>")
    if spectra:
        def draw(axes):
            ax = axes[0]
            for name, s in spectra:
                for key, style in (("features", "-"), ("projections", "--")):
                    values = s.get(key) or []
                    if values and values[0] > 0:
                        ax.plot(range(1, len(values) + 1), [v / values[0] for v in values], style, label=f"{name}: {key}")
            ax.set_yscale("log")
            ax.set_xlabel("index")
            ax.set_ylabel("singular value / largest")
            ax.set_title("singular values of centred, normalised held-out embeddings")
            ax.legend(fontsize="small")

        parts.append(_figure(draw, 1, width=7.0, height=3.5))
    if prototypes:
        def draw_prototypes(axes):
            for ax, (name, p) in zip(axes, prototypes):
                counts = sorted(p["counts"], reverse=True)
                ax.bar(range(len(counts)), counts, width=1.0)
                used = sum(1 for c in counts if c > 0)
                ax.set_title(f"{name}: {used} of {len(counts)} prototypes used")
                ax.set_xlabel("prototype (by usage)")
                ax.set_ylabel("held-out images")

        parts.append(_figure(draw_prototypes, len(prototypes), width=5.0))
    return "<h2>Collapse</h2>" + "".join(parts) if parts else ""


def _text(runs: Sequence[dict]) -> str:
    """Text runs: masked-token metrics, probes, homonyms, fill-mask examples."""
    parts = []
    for run in runs:
        s = run["summary"]
        if s.get("modality") != "text":
            continue
        block = [f"<h3>{_e(run['name'])}</h3>"]
        metrics = [(k, s[k]) for k in ("masked_accuracy", "perplexity", "predicted_tokens") if k in s]
        if metrics:
            block.append("<table><tbody>" + "".join(f"<tr><td>{_e(k)}</td><td>{_number(v, k == 'masked_accuracy')}</td></tr>"
                                                    for k, v in metrics) + "</tbody></table>")
        probes = {"this run": s, **(s.get("baselines") or {})}
        rows = [(name, p.get("linear_top1"), p.get("knn_top1")) for name, p in probes.items() if isinstance(p, dict)]
        rows = [r for r in rows if r[1] is not None or r[2] is not None]
        if rows:
            block.append("<table><thead><tr><th>probe features</th><th>linear top-1</th><th>kNN top-1</th></tr></thead><tbody>"
                         + "".join(f"<tr><td>{_e(n)}</td><td>{_number(a)}</td><td>{_number(b)}</td></tr>" for n, a, b in rows)
                         + "</tbody></table>")
        words = (s.get("homonyms") or {}).get("words") or {}
        if words:
            block.append("<table><thead><tr><th>word</th><th>occurrences</th><th>mean cosine between contexts</th><th>std</th></tr></thead><tbody>"
                         + "".join(f"<tr><td>{_e(w)}</td><td>{_e(h.get('occurrences'))}</td><td>{_number(h.get('mean_cosine'), False)}</td>"
                                   f"<td>{_number(h.get('cosine_std'), False)}</td></tr>" for w, h in words.items())
                         + "</tbody></table>")
        examples = run.get("fill_mask") or []
        if examples:
            block.append("<table><thead><tr><th>masked text</th><th>predictions</th></tr></thead><tbody>"
                         + "".join(f"<tr><td>{_e(x.get('text'))}</td><td>{_e(', '.join(map(str, x.get('predictions') or [])))}</td></tr>"
                                   for x in examples) + "</tbody></table>")
        parts.append("".join(block))
    return "<h2>Text</h2>" + "".join(parts) if parts else ""


def _video(runs: Sequence[dict]) -> str:
    """Video runs: the best-of-K curve from the summary."""
    items = [(run["name"], run["summary"]["best_of_k"]) for run in runs if isinstance(run["summary"].get("best_of_k"), dict)]
    if not items:
        return ""

    def draw(axes):
        ax = axes[0]
        for name, curve in items:
            ks = sorted(curve, key=int)
            ax.plot([int(k) for k in ks], [curve[k] for k in ks], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("K predicted futures")
        ax.set_ylabel("best-of-K error")
        ax.set_title("best of K")
        ax.legend(fontsize="small")

    return "<h2>Video</h2>" + _figure(draw, 1, width=5.0)


def _pictures(runs: Sequence[dict]) -> str:
    parts = []
    for run in runs:
        for name, png in (run.get("pictures") or {}).items():
            parts.append(f"<h3>{_e(run['name'])}: {_e(name)}</h3>" + _png_img(png, alt=name))
    return "<h2>Pictures</h2>" + "".join(parts) if parts else ""


def _skipped(runs: Sequence[dict]) -> str:
    parts = []
    for run in runs:
        text = (run.get("skipped") or "").strip()
        if text:
            count = len(text.splitlines())
            parts.append(f"<details><summary>{_e(run['name'])}: {count} skipped file(s)</summary><pre>{_e(text)}</pre></details>")
        else:
            parts.append(f"<p>{_e(run['name'])}: no file was skipped.</p>")
    return "<h2>Skipped files</h2>" + "".join(parts)


# ---------------------------------------------------------------------------- the page
def render_report(runs: list[dict]) -> str:
    """The HTML page of one run (a full report) or of several (a side-by-side comparison:
    one table column per run, curves overlaid, one panel per run elsewhere)."""
    if not runs:
        raise ValueError("render_report needs at least one run")
    title = runs[0]["name"] if len(runs) == 1 else "comparison: " + ", ".join(run["name"] for run in runs)
    sections = [
        f"<h1>{_e(title)}</h1>",
        "<h2>Summary</h2>", _summary_table(runs), _run_table(runs), _config(runs),
        "<h2>Training curves</h2>", _curves(runs),
        _energy(runs), _fewshot(runs), _retrieval(runs), _map(runs), _collapse(runs), _text(runs), _video(runs), _pictures(runs),
        _skipped(runs),
    ]
    other = [run["name"] for run in runs if run.get("data") is None and run["summary"].get("modality") == "image"]
    if other:
        sections.append(f'<p class="note">no held-out measurements for {_e(", ".join(other))}.</p>')
    meta = json.dumps([run["name"] for run in runs])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<meta name=\"selfsup-runs\" content=\"{_e(meta)}\"><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(s for s in sections if s) + "\n</body></html>\n")
