"""Reports of benchmark runs, built from the store alone (see :func:`report_from_store`)."""
from .build import report_from_store, write_html
from .html import SCORE_LEGEND, format_number, render_report

__all__ = ["render_report", "format_number", "SCORE_LEGEND", "report_from_store", "write_html"]
