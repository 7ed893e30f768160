"""Drift harness (D1): the canonical rollup path must equal the legacy raw scan (METRICS.md drift 0).

Entry points: `libs.drift.harness.run_drift` (library) and `libs.drift.harness.main` (`canal drift`).
"""
