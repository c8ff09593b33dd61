"""The collection policy as validated data, loaded from policies/<name>.toml."""

from __future__ import annotations

import tomllib
from datetime import time
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from domain.calendar import parse_hhmm
from domain.enums import CONTACT_KINDS, ActionKind, CollectionStage

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"

LADDER_KINDS = frozenset(
    {
        ActionKind.OVERDUE_SMS,
        ActionKind.CREDIT_NOTICE,
        ActionKind.VOICE_CALL,
        ActionKind.CREDIT_REPORT,
        ActionKind.ASSIGN_AGENT,
        ActionKind.DEMAND_LETTER,
        ActionKind.FIELD_VISIT,
        ActionKind.LEGAL_REFERRAL,
        ActionKind.CHARGE_OFF,
    }
)
# Steps that open a stage: on a late start the current stage's entry step still runs.
STAGE_ENTRY_KINDS = {
    ActionKind.ASSIGN_AGENT: CollectionStage.AGENT,
    ActionKind.LEGAL_REFERRAL: CollectionStage.LEGAL,
    ActionKind.CHARGE_OFF: CollectionStage.CHARGED_OFF,
}


class PolicyError(ValueError):
    """A bad policy file; the message names the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _clock(value: Any, field: str) -> time:
    if isinstance(value, time):
        return value
    return parse_hhmm(str(value), field)


class ContactWindow(Strict):
    opens: time = time(8, 0)
    closes: time = time(21, 0)

    @field_validator("opens", "closes", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> time:
        return _clock(value, "contact_window")

    @model_validator(mode="after")
    def _ordered(self) -> ContactWindow:
        if not self.opens < self.closes:
            raise ValueError("opens must be before closes")
        return self


class CallCaps(Strict):
    connected_calls_per_day: int = Field(3, gt=0)
    dial_attempts_per_line_per_day: int = Field(6, gt=0)
    call_attempts_per_7_days: int = Field(7, gt=0)


class Reminder(Strict):
    id: str
    day: int = Field(le=0)  # relative to the due date
    at: time
    template: str

    @field_validator("at", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> time:
        return _clock(value, "reminders.at")


class LadderStep(Strict):
    id: str
    day: int = Field(ge=1)  # days past due
    at: time
    kind: ActionKind

    @field_validator("at", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> time:
        return _clock(value, "ladder.at")

    @field_validator("kind")
    @classmethod
    def _ladder_kind(cls, value: ActionKind) -> ActionKind:
        if value not in LADDER_KINDS:
            raise ValueError(f"{value.value!r} is not a ladder action")
        return value

    @property
    def is_contact(self) -> bool:
        return self.kind in CONTACT_KINDS


class Policy(Strict):
    name: str
    max_annual_rate_bps: int = Field(3600, ge=0, le=100_000)
    # The largest principal a loan may be disbursed with (minor units; standard
    # 10,000,000,000 = 100,000,000.00): a larger `principal` is refused at the start.
    max_principal: int = Field(10_000_000_000, gt=0, le=10**15)
    grace_days: int = Field(3, ge=0)
    penalty_rate_multiplier_pct: int = Field(150, ge=0)
    penalty_day_basis: int = Field(360, gt=0)
    field_visit_min_overdue: int = Field(5_000_000, ge=0)
    credit_notice_lead_days: int = Field(10, ge=0)
    max_extension_days: int = Field(180, gt=0)
    # The longest term a loan may be disbursed with (months); a re-installment's new
    # term is capped by max_new_term_months, which may not exceed it.
    max_term_months: int = Field(120, gt=0, le=600)
    max_new_term_months: int = Field(60, gt=0)
    # How late a payment gateway may report a payment and still have it dated when it was
    # made (a due date is met by paying any time that local day).
    payment_backdate_days: int = Field(3, ge=0)
    # The collector's desk and borrower protections (DESIGN.md contract part 2).
    max_promise_days: int = Field(7, ge=0, le=366)
    max_broken_promises: int = Field(2, ge=1)
    dispute_response_days: int = Field(20, ge=1, le=366)
    max_hardship_days: int = Field(90, ge=0, le=3660)
    hardship_freezes_penalty: bool = True
    contact_window: ContactWindow = ContactWindow()
    call_caps: CallCaps = CallCaps()
    reminders: tuple[Reminder, ...]
    ladder: tuple[LadderStep, ...]

    @model_validator(mode="after")
    def _coherent(self) -> Policy:
        if self.max_new_term_months > self.max_term_months:
            raise ValueError("max_new_term_months must not exceed max_term_months")
        ids = [s.id for s in self.reminders] + [s.id for s in self.ladder]
        if len(ids) != len(set(ids)):
            raise ValueError("step ids must be unique")
        days = [s.day for s in self.ladder]
        if days != sorted(days):
            raise ValueError("ladder: steps must be listed in order of day")
        for kind in STAGE_ENTRY_KINDS:
            if sum(1 for s in self.ladder if s.kind is kind) != 1:
                raise ValueError(f"ladder: exactly one {kind.value} step is required")
        agent, legal, charge_off = (self.entry_day(k) for k in STAGE_ENTRY_KINDS)
        if not self.grace_days < agent < legal < charge_off:
            raise ValueError(
                "ladder: thresholds must be ordered grace_days < assign_agent < "
                f"legal_referral < charge_off (got {self.grace_days}, {agent}, {legal}, "
                f"{charge_off})"
            )
        notices = [s.day for s in self.ladder if s.kind is ActionKind.CREDIT_NOTICE]
        for report in (s for s in self.ladder if s.kind is ActionKind.CREDIT_REPORT):
            if not notices or min(notices) >= report.day:
                raise ValueError("ladder: a credit_report step needs a credit_notice step before it")
        return self

    def entry_day(self, kind: ActionKind) -> int:
        return next(s.day for s in self.ladder if s.kind is kind)

    def stage_for_dpd(self, dpd: int) -> CollectionStage:
        """The stage a loan is in by DPD alone (charge-off and payoff are events)."""
        if dpd <= 0:
            return CollectionStage.CURRENT
        if dpd <= self.grace_days:
            return CollectionStage.GRACE
        if dpd < self.entry_day(ActionKind.ASSIGN_AGENT):
            return CollectionStage.EARLY
        if dpd < self.entry_day(ActionKind.LEGAL_REFERRAL):
            return CollectionStage.AGENT
        return CollectionStage.LEGAL


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _error_message(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(policy)"
        parts.append(f"{key}: {err['msg']}")
    return f"{source}: " + "; ".join(parts)


def parse_policy(data: dict[str, Any], product: str | None = None, source: str = "policy") -> Policy:
    """A validated Policy from TOML data, with `products.<product>` overrides applied."""
    data = dict(data)
    products = data.pop("products", {}) or {}
    if not isinstance(products, dict):
        raise PolicyError(f"{source}: products: must be a table of per-product overrides")
    if product is not None and product in products:
        if not isinstance(products[product], dict):
            raise PolicyError(f"{source}: products.{product}: must be a table of overrides")
        data = _merge(data, products[product])
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_error_message(source, exc)) from exc


def load_policy_text(text: str, product: str | None = None, source: str = "policy") -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
    return parse_policy(data, product, source)


@cache
def load_policy(name: str = "standard", product: str | None = None) -> Policy:
    """Policy `name` from policies/<name>.toml (cached: policy files are read once)."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise PolicyError(f"policy: {name!r} is not a policy name")
    path = POLICY_DIR / f"{name}.toml"
    if not path.exists():
        raise PolicyError(f"policy: no policy file {path.name} in {POLICY_DIR}")
    return load_policy_text(path.read_text(encoding="utf-8"), product, source=path.name)
