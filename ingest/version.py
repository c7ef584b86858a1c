"""The package version: one place, read by the build (pyproject), the User-Agent and the metrics."""

__version__ = "0.1.0"
