"""Settings that would make an answer impossible to compute exactly are refused at startup."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from libs.config import Settings


def test_facts_must_be_kept_at_least_as_long_as_minute_aggregates() -> None:
    # drilldowns have no minute rows: the last minutes of a window come from raw facts
    with pytest.raises(ValidationError, match="RETAIN_FACTS_DAYS \\(3\\) must be 0 \\(keep forever\\) or at least "
                                              "RETAIN_MINUTE_DAYS \\(7\\)"):
        Settings(retain_facts_days=3, retain_minute_days=7)
    with pytest.raises(ValidationError, match="RETAIN_FACTS_DAYS"):
        Settings(retain_facts_days=30, retain_minute_days=0)  # minutes forever, facts not


def test_equal_or_longer_fact_retention_and_keep_forever_are_accepted() -> None:
    assert Settings(retain_facts_days=7, retain_minute_days=7).retain_facts_days == 7
    assert Settings(retain_facts_days=0, retain_minute_days=0).retain_facts_days == 0
    assert Settings().retain_facts_days >= Settings().retain_minute_days
