"""SQLAlchemy 2 models: the store of record.

Every unique key of a fact or aggregate table starts with the target pubkey id
(`target_id`), so the schema can be distributed by target on Citus later.
Pubkeys and notes are mapped to dense integer ids (`pubkeys`, `notes`) so that
exact distinct sets are roaring bitmaps over small integers.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Pubkey(Base):
    """Dense id for every pubkey seen as target or actor."""

    __tablename__ = "pubkeys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pubkey: Mapped[str] = mapped_column(String(64), unique=True)


class Note(Base):
    """Dense id for every note key (event id, or `kind:pubkey:d` address)."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    note_key: Mapped[str] = mapped_column(Text, unique=True)
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class Event(Base):
    """Every admitted event, once (the `event_id` dedup key)."""

    __tablename__ = "events"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pubkey: Mapped[str] = mapped_column(String(64))
    kind: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)
    tags: Mapped[list] = mapped_column(JSONB)
    content: Mapped[str] = mapped_column(Text)
    sig: Mapped[str] = mapped_column(String(128))
    address: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[int] = mapped_column(BigInteger)
    origin: Mapped[str] = mapped_column(Text, server_default="")
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    __table_args__ = (
        Index(None, "address", "created_at", postgresql_where=text("address IS NOT NULL")),
        Index(None, "pubkey", "kind", "created_at"),
    )


class EventRef(Base):
    """Which events point at which event id (e/q tags): re-derived when the referenced event arrives."""

    __tablename__ = "event_refs"
    ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class ZapReceipt(Base):
    """Valid zap receipts by payment hash: only the earliest per hash counts."""

    __tablename__ = "zap_receipts"
    payment_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    recipient: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(64))
    msats: Mapped[int] = mapped_column(BigInteger)
    anon: Mapped[bool] = mapped_column(Boolean)
    note_key: Mapped[str | None] = mapped_column(Text)
    description_hash_mismatch: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    __table_args__ = (Index(None, "event_id"),)


class Tombstone(Base):
    """A NIP-09 deletion reference, kept whether or not its target has arrived."""

    __tablename__ = "tombstones"
    ref: Mapped[str] = mapped_column(Text, primary_key=True)
    deletion_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deleter: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)


class ContactList(Base):
    """Every admitted kind 3 version (the follower history is built from these)."""

    __tablename__ = "contact_lists"
    author_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    follows: Mapped[list[str]] = mapped_column(ARRAY(Text))


class Profile(Base):
    """Display names from the newest kind 0 per pubkey."""

    __tablename__ = "profiles"
    pubkey: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[str] = mapped_column(String(64))


class Fact(Base):
    """One counted action (or own activity) towards a target pubkey, timed by its source event.

    Two indexes, both written where recent time is, so ingest does not slow down as the table grows
    (migration 0007; before it, three of six indexes took every new fact at a random place, which
    cost a cold page and a full-page WAL image per fact at millions of rows):
    - the key leads with `created_at`, the source event's own time (every fact of a source has it), so
      derivation finds a source's facts by (created_at, source_event_id) and retention deletes by time;
    - `(target_id, created_at)`: every answer's raw edges and the minute rollups.
    """

    __tablename__ = "facts"
    created_at: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source_event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fact_type: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    kind: Mapped[int] = mapped_column(Integer)
    actor_id: Mapped[int | None] = mapped_column(Integer)
    note_id: Mapped[int | None] = mapped_column(Integer)
    msats: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    sub: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    __table_args__ = (Index(None, "target_id", "created_at"),)


class Aggregate(Base):
    """Per target and bucket: every additive metric plus exact distinct sets (roaring bitmaps)."""

    __tablename__ = "aggregates"
    target_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tier: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    bucket_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    facts: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    zaps_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    zaps_msats: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reactions_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reactions_likes: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reactions_dislikes: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reposts_k6: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reposts_k16: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    replies_k1: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    replies_k1111: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    quotes_k1: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    quotes_k1111: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    mentions: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    follows: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    unfollows: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    notes: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    zap_senders: Mapped[bytes | None] = mapped_column(LargeBinary)
    reactors: Mapped[bytes | None] = mapped_column(LargeBinary)
    articles: Mapped[bytes | None] = mapped_column(LargeBinary)
    __table_args__ = (Index(None, "tier", "bucket_start"),)


#: The finest tier with note/counterparty drilldown rows. A minute bucket's drilldown rows were about
#: one per fact (the raw facts again, without compression); drilldowns read sub-hour edges from facts,
#: which are kept at least as long as minutes (`Settings.retain_facts_days`), and the hour tier's rows
#: are rolled up from facts. The drilldown tables have only their key as index: every read goes by
#: target, and retention finds expired rows per target (services.compactor.retention).
DRILLDOWN_MIN_TIER = 2


class NoteAggregate(Base):
    """Per target, bucket (hour or coarser) and target note: the note drilldown's columns. Counts are
    int4 (a bucket's count of one note cannot approach 2^31; an overflow fails the rollup, never wraps)."""

    __tablename__ = "note_aggregates"
    target_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tier: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    bucket_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    note_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    zaps_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    zaps_msats: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reactions_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    reposts_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    replies_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    quotes_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class ActorAggregate(Base):
    """Per target, bucket (hour or coarser) and actor: the counterparty drilldown's columns (int4 counts)."""

    __tablename__ = "actor_aggregates"
    target_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tier: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    bucket_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    actor_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    zaps_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    zaps_msats: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reactions_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    reposts_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    replies_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    quotes_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))


#: Entries kept per top list, by tier (hour, day, 8-day and 64-day buckets; minutes have no drilldown
#: rows). A bucket gets lists when its aggregates row counts more facts than its size: the query finds
#: listed buckets by that same rule. 2,048 from the day up (migration 0007; 256/1,024 before): at 5M
#: facts a busy day has ~1,600 zapped notes, so shorter day lists left msats bounds at a common zap amount
#: and the 7d/30d test could not prove its page; longer block lists cost more than they prove. Hours keep
#: 256: the current day's hours (no day row until it ends) are then merged as lists, not read whole
#: (bench/NOTES.md).
TOP_LIST_SIZES = {2: 256, 3: 2048, 4: 2048, 5: 2048}


def top_list_min_tier() -> int:
    """The finest tier with top lists (read at call time, so a test may change TOP_LIST_SIZES)."""
    return min(TOP_LIST_SIZES)


class TopList(Base):
    """Per target, day-or-coarser bucket, drilldown and sort column: the keys with the largest values.

    `keys`/`vals` hold the TOP_LIST_SIZES[tier] largest positive values of `metric` in the bucket (ties by key
    id), `bound` the next value (0 when every positive key is listed): no unlisted key has more in this
    bucket. Rebuilt with the bucket's drilldown rows, in the same transaction.
    """

    __tablename__ = "top_lists"
    target_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tier: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    bucket_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dim: Mapped[str] = mapped_column(String(16), primary_key=True)  # note | counterparty
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)  # an ENGAGEMENT_COLUMNS name
    keys: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    vals: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    bound: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class DirtyBucket(Base):
    """A bucket whose aggregate may disagree with its facts; the planner never reads it."""

    __tablename__ = "dirty_buckets"
    target_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tier: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    bucket_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    gen: Mapped[int] = mapped_column(BigInteger, server_default=text("1"))
    marked_at: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    __table_args__ = (Index(None, "tier", "bucket_start"),)


class WatermarkRow(Base):
    """Per tier: the time up to which that tier is complete."""

    __tablename__ = "watermarks"
    tier: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    watermark: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class RetentionHorizon(Base):
    """Per tier (and raw facts): the earliest time whose data is still present."""

    __tablename__ = "retention_horizons"
    tier: Mapped[str] = mapped_column(String(16), primary_key=True)
    keep_days: Mapped[int] = mapped_column(Integer)
    horizon: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class Job(Base):
    """Async analytics queries and compaction runs, with phase, progress and error."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(32), server_default="queued")
    progress: Mapped[float] = mapped_column(Double, server_default=text("0"))
    principal: Mapped[str] = mapped_column(Text, server_default="")
    params: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    result: Mapped[dict | None] = mapped_column(JSONB)
    error: Mapped[dict | None] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    tier: Mapped[str | None] = mapped_column(String(16))
    buckets: Mapped[int | None] = mapped_column(BigInteger)
    facts_read: Mapped[int | None] = mapped_column(BigInteger)
    duration_s: Mapped[float | None] = mapped_column(Double)
    outcome: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (Index(None, "kind", "created_at"), Index(None, "principal", "created_at"))


class Reject(Base):
    """An input that was not admitted, with its machine-readable reason and the raw text (truncated)."""

    __tablename__ = "rejects"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, server_default="")
    message: Mapped[str] = mapped_column(Text, server_default="")
    origin: Mapped[str] = mapped_column(Text, server_default="")
    raw: Mapped[str] = mapped_column(Text, server_default="")
    received_at: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (Index(None, "reason", "received_at"), Index(None, "event_id"))


class RelayCursor(Base):
    """Per relay and filter: the persisted `since` and health, for resubscription and freshness."""

    __tablename__ = "relay_cursors"
    relay: Mapped[str] = mapped_column(Text, primary_key=True)
    filter_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    since: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_event_at: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_seen_at: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    connected: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    events_received: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_error: Mapped[str] = mapped_column(Text, server_default="")
    interest_mark: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class TrackedKey(Base):
    """A key TRACK mode follows; `ready_at` is set once its first backfill is complete everywhere."""

    __tablename__ = "tracked_keys"
    pubkey: Mapped[str] = mapped_column(String(64), primary_key=True)
    added_at: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16), server_default="api")
    label: Mapped[str] = mapped_column(Text, server_default="")
    first_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    ready_at: Mapped[int | None] = mapped_column(BigInteger)


class Interest(Base):
    """One thing the TRACK subscriptions ask relays for (append-only; `id` orders backfills)."""

    __tablename__ = "interest"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    sort: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(64), server_default="")
    added_at: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (UniqueConstraint("sort", "value"),)


class ServiceKey(Base):
    """A secret key canal signs with (NIP-42 AUTH, NIP-85), generated on first use."""

    __tablename__ = "service_keys"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hex: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)


class FeatureFlag(Base):
    """Which path serves v2: off / cohort / percent / on."""

    __tablename__ = "feature_flags"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    percent: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    cohort: Mapped[list] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    updated_at: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_by: Mapped[str] = mapped_column(Text, server_default="")


class ApiKey(Base):
    """API keys, hashed at rest (sha256 of the secret); scopes `read:any`, `admin`."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    name: Mapped[str] = mapped_column(Text, server_default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list] = mapped_column(JSONB)
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class IngestCounter(Base):
    """Running ingest totals and the newest fully-committed receive time (freshness `as_of`)."""

    __tablename__ = "ingest_state"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class ProviderAssertion(Base):
    """A NIP-85 assertion as last published: value tags, the signed event, the relays that acknowledged it."""

    __tablename__ = "provider_assertions"
    kind: Mapped[int] = mapped_column(Integer, primary_key=True)
    d: Mapped[str] = mapped_column(Text, primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), index=True)
    window: Mapped[str] = mapped_column(String(8))
    tags: Mapped[list] = mapped_column(JSONB)
    event: Mapped[dict] = mapped_column(JSONB)
    relays: Mapped[list] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
