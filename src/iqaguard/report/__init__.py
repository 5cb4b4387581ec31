"""Self-contained HTML report of a benchmark run (see :func:`render_report`)."""
from .html import SCORE_LEGEND, format_number, render_report

__all__ = ["render_report", "format_number", "SCORE_LEGEND"]
