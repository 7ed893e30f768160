"""`canal bench`: a realistic workload, every figure of issue 9 measured against its baseline in the same run.

Entry point: :func:`tools.bench.run.main`. The bench keeps its own embedded PostgreSQL in
``<out>/cache/pg`` (never the user's ``.canal``), caches the generated workload there
(``<out>/cache/manifest.json``), and writes ``<out>/results.json`` and ``<out>/report.md``.
"""
