"""Random fact sets written exactly as ingest writes them (facts + dirty minute buckets)."""

from __future__ import annotations

import random

from sqlalchemy import Engine, text

from libs.metrics import SUB_ANON, SUB_DISLIKE, SUB_LIKE, FactType
from services.ingest.store import mark_dirty

KINDS = {
    FactType.ZAP: (9735,), FactType.REACTION: (7,), FactType.REPOST: (6, 16), FactType.REPLY: (1, 1111),
    FactType.QUOTE: (1, 1111), FactType.MENTION: (1,), FactType.FOLLOW: (3,), FactType.UNFOLLOW: (3,),
    FactType.NOTE: (1,), FactType.ARTICLE: (30023,),
}


def seed_dictionaries(engine: Engine, pubkeys: int = 12, notes: int = 25) -> None:
    """Pubkeys 1..n and notes 1..m with readable keys."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO pubkeys (id, pubkey) SELECT g, lpad(to_hex(g), 64, '0') "
                          "FROM generate_series(1, :n) g ON CONFLICT DO NOTHING"), {"n": pubkeys})
        conn.execute(text("INSERT INTO notes (id, note_key, deleted) SELECT g, 'note' || g, g % 7 = 0 "
                          "FROM generate_series(1, :n) g ON CONFLICT DO NOTHING"), {"n": notes})


def random_facts(rng: random.Random, n: int, t0: int, span: int, targets: int = 3, actors: int = 12,
                 notes: int = 25) -> list[dict[str, int | str | None]]:
    """n facts over [t0, t0 + span) for target ids 1..targets."""
    out = []
    for i in range(n):
        ft = rng.choice(list(FactType))
        sub = 0
        if ft == FactType.REACTION:
            sub = rng.choice([SUB_LIKE, SUB_DISLIKE, 0])
        elif ft == FactType.ZAP and rng.random() < 0.2:
            sub = SUB_ANON
        out.append({
            "target_id": rng.randint(1, targets), "source_event_id": f"{i:064x}", "fact_type": int(ft),
            "created_at": t0 + rng.randrange(span), "kind": rng.choice(KINDS[ft]),
            "actor_id": rng.randint(1, actors),
            "note_id": rng.randint(1, notes) if ft not in (FactType.MENTION, FactType.FOLLOW, FactType.UNFOLLOW)
            and rng.random() < 0.9 else None,
            "msats": rng.choice([1000, 21000, 5_000_000]) if ft == FactType.ZAP else 0, "sub": sub,
        })
    return out


def insert_facts(engine: Engine, rows: list[dict[str, int | str | None]]) -> None:
    """Insert facts and mark their minutes dirty, in one transaction, like ingest."""
    if not rows:
        return
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO facts (target_id, source_event_id, fact_type, created_at, kind, actor_id, note_id, msats, sub) "
            "VALUES (:target_id, :source_event_id, :fact_type, :created_at, :kind, :actor_id, :note_id, :msats, :sub)"),
            rows)
        mark_dirty(conn, {(int(r["target_id"]), int(r["created_at"]) - int(r["created_at"]) % 60)  # type: ignore[arg-type]
                          for r in rows})


def delete_facts(engine: Engine, rows: list[dict[str, int | str | None]]) -> None:
    """Retract facts (as a deletion would) and mark their minutes dirty."""
    with engine.begin() as conn:
        for r in rows:
            conn.execute(text("DELETE FROM facts WHERE target_id = :target_id AND source_event_id = :source_event_id "
                              "AND fact_type = :fact_type"), r)
        mark_dirty(conn, {(int(r["target_id"]), int(r["created_at"]) - int(r["created_at"]) % 60)  # type: ignore[arg-type]
                          for r in rows})
