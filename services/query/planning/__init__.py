"""Pure, deterministic query planning: windows, tier plans, time buckets, cursors, paging."""
