"""Plain-text tables for the terminal."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

ACCURACY_COLUMNS = (
    ("kNN k=20", "knn_top1"),
    ("kNN k=200", "knn200_top1"),
    ("linear", "linear_top1"),
    ("1-shot", ("fewshot", "1")),
    ("10-shot", ("fewshot", "10")),
    ("100-shot", ("fewshot", "100")),
)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: Sequence[int] = (0,)) -> str:
    """Columns ``left`` (the first) left-aligned, the others right-aligned, a rule under the header."""
    cells = [list(map(str, header))] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(value.ljust(widths[i]) if i in left else value.rjust(widths[i]) for i, value in enumerate(row)).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(row) for row in cells[1:]])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def _lookup(metrics: dict, key) -> Any:
    if isinstance(key, tuple):
        return (metrics.get(key[0]) or {}).get(key[1])
    return metrics.get(key)


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


SUMMARY_WIDTH = 100
"""The widest line of the summary table: it must read in a 100-column terminal."""


def format_summary(summary: dict[str, Any], width: int = SUMMARY_WIDTH) -> str:
    """The table printed after ``selfsup pretrain`` / ``evaluate``: the run beside its
    baselines. Every line is at most ``width`` characters: a longer one continues, indented,
    on the next lines, broken after its ``|``, ``;`` or ``,`` separators where it can be."""
    modality = summary.get("modality", "image")
    samples = {"text": "sequences", "video": "clips"}.get(modality, "images")
    lines = [
        f"method {summary.get('method')} | data {summary.get('data')} | backbone {summary.get('backbone')} | "
        f"{summary.get('steps')} steps in {summary.get('seconds', 0):.0f} s "
        f"({summary.get('images_per_second', 0):,.0f} {samples}/s)" + _stopped_by(summary.get("stopped_by"))
    ]
    if "perplexity" in summary:
        lines.append(
            f"held-out predicted tokens: accuracy {_percent(summary['masked_accuracy'])}, perplexity {summary['perplexity']:.1f}"
        )
    rows = []
    candidates = [(summary.get("method", "this run"), summary)]
    candidates += [(name.replace("_", " "), metrics) for name, metrics in (summary.get("baselines") or {}).items()]
    for name, metrics in candidates:
        if "knn_top1" in metrics:
            rows.append([name] + [_percent(_lookup(metrics, key)) for _, key in ACCURACY_COLUMNS])
    if rows:
        lines += ["", format_table(["features"] + [label for label, _ in ACCURACY_COLUMNS], rows)]
    collapse = summary.get("collapse")
    if "energy_auc_by_negative" in summary:
        aucs = summary["energy_auc_by_negative"]
        lines += ["", "energy AUC (true continuation vs " + ", ".join(
            f"{name.replace('_', ' ')} {value:.3f}" for name, value in aucs.items()) + ")"]
    elif "energy_auc" in summary:
        pairs = "original sentence vs one token replaced" if modality == "text" else "two views of one image vs of two images"
        lines += ["", f"energy AUC ({pairs}): {summary['energy_auc']:.3f}"]
    if "best_of_k" in summary:
        lines.append(
            "best-of-K error (per-pixel MSE): " + ", ".join(f"K={k} {value:.4f}" for k, value in summary["best_of_k"].items())
            + f"; sample diversity {summary['sample_diversity']:.4f}"
        )
    if summary.get("predictions"):
        lines.append(f"predicted futures: {summary['predictions']}")
    homonyms = summary.get("homonyms") or {}
    if homonyms.get("mean_cosine") is not None:
        lines.append(
            f"homonyms: mean cosine between one word's vectors in different sentences {homonyms['mean_cosine']:.3f} "
            f"over {len(homonyms['words'])} words; 1 = the same vector everywhere, as in a static model"
        )
    if collapse:
        reasons = collapse.get("reasons", []) if collapse.get("collapsed") else []
        verdict = "COLLAPSED:" if reasons else "COLLAPSED" if collapse.get("collapsed") else "no collapse"
        lines.append(
            f"collapse: std*sqrt(d) {collapse['std_sqrt_d']:.3f}, effective rank {collapse['effective_rank']:.1f}, "
            f"alignment {_fmt(collapse.get('alignment'))}, uniformity {_fmt(collapse.get('uniformity'))} -> {verdict}"
        )
        usage = collapse.get("prototypes")
        # Each reason on lines of its own, under the verdict (they are sentences, often long).
        lines += [wrapped for reason in reasons for wrapped in _wrap(f"- {reason}", width, first="  ", rest="    ")]
        if usage:
            lines.append(
                f"prototypes: {usage['used']} used, largest cluster {100 * usage['largest_share']:.1f}% of the images, "
                f"usage entropy {usage['entropy']:.3f}, assignment entropy {usage['assignment_entropy']:.3f} (x ln K)"
            )
    return "\n".join(wrapped for line in lines for wrapped in _fit(line, width))


def _fit(line: str, width: int) -> list[str]:
    """``line`` (or a table, several lines) as lines of at most ``width`` characters, with
    the same words in the same order; a table is left whole (its columns must stay aligned)."""
    if len(line) <= width or "\n" in line:
        return [line]
    return _wrap(line, width, first="", rest="  ")


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    """``text`` broken into lines of at most ``width`` characters, the first indented by
    ``first``, the others by ``rest``: after a `` | ``, ``; `` or ``, `` where the pieces
    between such separators fit, else between words; a word longer than a line (a long
    path) is cut."""
    room = width - max(len(first), len(rest))
    for separator in (" | ", "; ", ", "):
        pieces = text.split(separator)
        if len(pieces) > 1 and all(len(piece) + len(separator) <= room for piece in pieces):
            lines, current = [], pieces[0]
            for piece in pieces[1:]:
                if len(current) + len(separator) + len(piece) <= room:
                    current += separator + piece
                else:
                    lines.append(current + separator.rstrip())
                    current = piece
            lines.append(current)
            return [(first if i == 0 else rest) + line for i, line in enumerate(lines)]
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)


def _stopped_by(limit: str | None) -> str:
    return {"budget": ", stopped by the time budget", "schedule": ", all planned steps done",
            "signal": ", stopped by a signal (resume with --resume)"}.get(limit or "", "")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"
