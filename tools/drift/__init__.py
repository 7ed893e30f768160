"""Drift harness (D1): the canonical rollup path must equal the legacy raw scan (METRICS.md drift 0).

Entry points: `tools.drift.harness.run_drift` (library) and `tools.drift.harness.main` (`canal drift`).
"""
