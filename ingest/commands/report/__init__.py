"""``ingest report RESULTS…``: what one or more results files say happened (``aggregate``), rendered as JSON or
tables (``render``)."""

from ingest.commands.report.aggregate import ErrorGroup, Report, RunSeen, build_report
from ingest.commands.report.histogram import LogHistogram
from ingest.commands.report.render import render_json, render_text

__all__ = ["ErrorGroup", "LogHistogram", "Report", "RunSeen", "build_report", "render_json", "render_text"]
