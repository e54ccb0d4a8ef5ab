"""Human-readable views of a run: the summary table printed at the end of every command."""

from selfsup.report.table import format_summary, format_table

__all__ = ["format_summary", "format_table"]
