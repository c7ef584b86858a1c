"""Reproducible benchmarks of ``ingest run`` against baselines measured in the same run (issue 5 §1).

``python -m bench.run`` (``make bench``); ``--quick`` for about a minute, ``--smoke`` for a few seconds. See
``bench/README.md`` for what every row measures.
"""
