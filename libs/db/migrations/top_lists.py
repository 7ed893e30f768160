"""The statements that build every top list from the drilldown rows, shared by migrations 0006 and 0007.

Frozen with those migrations: a later change of how lists are built needs a new migration (and its own
copy), not an edit here. The compactor builds the same lists bucket by bucket
(services.compactor.rollup._top_list_sql).
"""

from alembic import op

DIMS = (("note", "note_aggregates", "note_id"), ("counterparty", "actor_aggregates", "actor_id"))
METRICS = ("zaps_count", "zaps_msats", "reactions_count", "reposts_count", "replies_count", "quotes_count")


def build_top_lists(sizes: dict[int, int]) -> None:
    """Insert the top list of every (bucket, drilldown, metric) of each tier in `sizes` whose bucket has more
    facts than the tier's size: that many keys with the largest positive values, and the next value."""
    for (dim, table, key), metric, (tier, size) in ((d, m, s) for d in DIMS for m in METRICS for s in sizes.items()):
        op.execute(
            "INSERT INTO top_lists (target_id, tier, bucket_start, dim, metric, keys, vals, bound) "
            f"SELECT a.target_id, a.tier, a.bucket_start, '{dim}', '{metric}', "
            f"coalesce(l.keys[1:{size}], '{{}}'), coalesce(l.vals[1:{size}], '{{}}'), coalesce(l.vals[{size + 1}], 0) "
            "FROM aggregates a CROSS JOIN LATERAL ("
            "SELECT array_agg(x.k ORDER BY x.v DESC, x.k) AS keys, array_agg(x.v ORDER BY x.v DESC, x.k) AS vals "
            f"FROM (SELECT g.{key} AS k, g.{metric} AS v FROM {table} g WHERE g.target_id = a.target_id "
            f"AND g.tier = a.tier AND g.bucket_start = a.bucket_start AND g.{metric} > 0 "
            f"ORDER BY g.{metric} DESC, g.{key} LIMIT {size + 1}) x) l "
            f"WHERE a.tier = {tier} AND a.facts > {size}"
        )
