"""The collection policy: the standard file, per-product overrides, refusals naming the key."""

from __future__ import annotations

import tomllib
from datetime import time

import pytest

from domain.enums import ActionKind, CollectionStage
from domain.policy import POLICY_DIR, PolicyError, load_policy, load_policy_text, parse_policy

STANDARD_TEXT = (POLICY_DIR / "standard.toml").read_text(encoding="utf-8")


def test_standard_policy_is_the_design_table() -> None:
    policy = load_policy("standard")
    assert policy.name == "standard"
    assert policy.max_annual_rate_bps == 3600
    assert policy.grace_days == 3
    assert (policy.penalty_rate_multiplier_pct, policy.penalty_day_basis) == (150, 360)
    assert policy.field_visit_min_overdue == 5_000_000
    assert policy.credit_notice_lead_days == 10
    assert (policy.contact_window.opens, policy.contact_window.closes) == (time(8), time(21))
    caps = policy.call_caps
    assert (
        caps.connected_calls_per_day,
        caps.dial_attempts_per_line_per_day,
        caps.call_attempts_per_7_days,
    ) == (
        3,
        6,
        7,
    )
    assert [(r.id, r.day, r.at) for r in policy.reminders] == [
        ("t-3", -3, time(9)),
        ("t-1", -1, time(9)),
        ("due-today", 0, time(8, 30)),
    ]
    assert [(s.day, s.kind) for s in policy.ladder] == [
        (1, ActionKind.OVERDUE_SMS),
        (3, ActionKind.OVERDUE_SMS),
        (5, ActionKind.CREDIT_NOTICE),
        (7, ActionKind.VOICE_CALL),
        (14, ActionKind.VOICE_CALL),
        (15, ActionKind.CREDIT_REPORT),
        (21, ActionKind.VOICE_CALL),
        (31, ActionKind.ASSIGN_AGENT),
        (61, ActionKind.DEMAND_LETTER),
        (61, ActionKind.FIELD_VISIT),
        (91, ActionKind.LEGAL_REFERRAL),
        (181, ActionKind.CHARGE_OFF),
    ]
    assert policy.stage_for_dpd(31) is CollectionStage.AGENT


@pytest.mark.parametrize(
    ("product", "field_visit_min_overdue"),
    [(None, 5_000_000), ("auto", 2_000_000), ("credit", 5_000_000), ("installment", 5_000_000)],
    ids=["base", "auto-override", "credit", "no-override"],
)
def test_product_overrides(product: str | None, field_visit_min_overdue: int) -> None:
    assert load_policy("standard", product).field_visit_min_overdue == field_visit_min_overdue


def test_nested_override_merges_instead_of_replacing() -> None:
    data = tomllib.loads(STANDARD_TEXT)
    data["products"]["auto"] = {"call_caps": {"connected_calls_per_day": 2}}
    policy = parse_policy(data, "auto")
    assert policy.call_caps.connected_calls_per_day == 2
    assert policy.call_caps.dial_attempts_per_line_per_day == 6  # kept from the base


def _replace(old: str, new: str) -> str:
    assert old in STANDARD_TEXT, old
    return STANDARD_TEXT.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (_replace("grace_days = 3 ", "grace_days = 40 "), "ladder", "thresholds must be ordered"),
        (
            _replace('id = "dpd-91-legal"\nday = 91', 'id = "dpd-91-legal"\nday = 200'),
            "ladder",
            "in order of day",
        ),
        (_replace('closes = "21:00"', 'closes = "07:00"'), "contact_window", "opens must be before closes"),
        (_replace('closes = "21:00"', 'closes = "08:00"'), "contact_window", "opens must be before closes"),
        (
            _replace("connected_calls_per_day = 3", "connected_calls_per_day = 0"),
            "call_caps.connected_calls_per_day",
            "greater than 0",
        ),
        (
            _replace("call_attempts_per_7_days = 7", "call_attempts_per_7_days = -1"),
            "call_caps.call_attempts_per_7_days",
            "greater than 0",
        ),
        (_replace('opens = "08:00"', 'opens = "8 am"'), "contact_window.opens", "not a time like 08:00"),
        (_replace('at = "08:30"', 'at = "25:00"'), "reminders.2.at", "not a time like 08:00"),
        (_replace('day = 5\nat = "10:00"', 'day = 5\nat = "ten"'), "ladder.2.at", "not a time like 08:00"),
        (_replace('kind = "voice_call"', 'kind = "carrier_pigeon"'), "ladder.3.kind", "Input should be"),
        (_replace('kind = "voice_call"', 'kind = "reminder"'), "ladder.3.kind", "not a ladder action"),
        (
            _replace('kind = "credit_notice"', 'kind = "overdue_sms"'),
            "ladder",
            "credit_report step needs a credit_notice",
        ),
        (
            # The only notice at DPD 21, after the report at DPD 15.
            _replace('kind = "credit_notice"', 'kind = "overdue_sms"').replace(
                'id = "dpd-21-call"\nday = 21\nat = "10:00"\nkind = "voice_call"',
                'id = "dpd-21-call"\nday = 21\nat = "10:00"\nkind = "credit_notice"',
            ),
            "ladder",
            "credit_report step needs a credit_notice",
        ),
        (_replace('kind = "charge_off"', 'kind = "legal_referral"'), "ladder", "exactly one"),
        (_replace('id = "t-1"', 'id = "t-3"'), "(policy)", "ids must be unique"),
        (_replace("day = -1", "day = 2"), "reminders.1.day", "less than or equal to 0"),
        (
            _replace("max_annual_rate_bps = 3600", "max_annual_rate_bps = -1"),
            "max_annual_rate_bps",
            "greater than or equal",
        ),
        (_replace("penalty_day_basis = 360", "penalty_day_basis = 0"), "penalty_day_basis", "greater than 0"),
        (
            _replace("max_new_term_months = 60", "max_new_term_months = 60\nmystery = 1"),
            "mystery",
            "Extra inputs",
        ),
        (_replace('name = "standard"', "name = "), "not valid TOML", "not valid TOML"),
        (_replace("max_term_months = 120", "max_term_months = 0"), "max_term_months", "greater than 0"),
        (
            _replace("max_term_months = 120", "max_term_months = 36"),
            "(policy)",
            "max_new_term_months must not exceed max_term_months",
        ),
    ],
    ids=[
        "unordered-thresholds",
        "ladder-out-of-order",
        "window-closes-before-opens",
        "window-empty",
        "zero-cap",
        "negative-cap",
        "bad-window-time",
        "bad-reminder-time",
        "bad-ladder-time",
        "unknown-action-kind",
        "reminder-in-ladder",
        "report-without-notice",
        "notice-not-before-report",
        "two-legal-steps",
        "duplicate-ids",
        "reminder-after-due",
        "negative-max-rate",
        "zero-day-basis",
        "unknown-key",
        "bad-toml",
        "zero-max-term",
        "new-term-above-max-term",
    ],
)
def test_bad_policy_is_refused_naming_the_key(text: str, key: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        load_policy_text(text, source="custom.toml")
    text_of = str(err.value)
    assert text_of.startswith("custom.toml: ")
    assert key in text_of
    assert message in text_of


def test_bad_product_override_is_refused_naming_the_key() -> None:
    data = tomllib.loads(STANDARD_TEXT)
    data["products"]["auto"] = {"grace_days": -1}
    with pytest.raises(PolicyError, match="grace_days"):
        parse_policy(data, "auto")
    # Only the product asked for is merged: the base still loads.
    assert parse_policy(tomllib.loads(STANDARD_TEXT) | {"products": data["products"]}).grace_days == 3


@pytest.mark.parametrize(
    ("products", "product", "message"),
    [
        ([1, 2], None, "products: must be a table"),
        ({"auto": 5}, "auto", "products.auto: must be a table"),
    ],
    ids=["products-not-a-table", "product-not-a-table"],
)
def test_malformed_products_are_refused(products: object, product: str | None, message: str) -> None:
    data = tomllib.loads(STANDARD_TEXT) | {"products": products}
    with pytest.raises(PolicyError, match=message):
        parse_policy(data, product)


def test_toml_time_literals_are_accepted() -> None:
    policy = load_policy_text(_replace('opens = "08:00"', "opens = 07:30:00"))
    assert policy.contact_window.opens == time(7, 30)


@pytest.mark.parametrize(
    ("name", "message"),
    [("../etc/passwd", "not a policy name"), ("no-such-policy", "no policy file no-such-policy.toml")],
    ids=["path", "missing"],
)
def test_load_policy_refuses_unknown_names(name: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy(name)
