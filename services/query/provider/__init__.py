"""The NIP-85 provider: canal's numbers for tracked keys as Trusted Assertions on relays.

It lives with the query service's worker because the query service is the one source of
numbers: the provider asks it over gRPC, exactly as the gateway does, and never reads facts
itself. `assertions` maps answers to NIP-85 tags (pure), `store` keeps what was last published,
`runner` is one scheduled run (and the arq cron job). docs/nip85.md is the reader's guide.
"""
