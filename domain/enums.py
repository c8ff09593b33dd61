"""The vocabulary shared by every layer: products, stages, actions, channels."""

from enum import StrEnum


class Product(StrEnum):
    CREDIT = "credit"
    INSTALLMENT = "installment"
    AUTO = "auto"


class RepaymentMethod(StrEnum):
    EQUAL_INSTALLMENT = "equal_installment"  # 等额本息
    EQUAL_PRINCIPAL = "equal_principal"  # 等额本金


class CollectionStage(StrEnum):
    CURRENT = "CURRENT"
    GRACE = "GRACE"
    EARLY = "EARLY"
    AGENT = "AGENT"
    LEGAL = "LEGAL"
    CHARGED_OFF = "CHARGED_OFF"
    PAID_OFF = "PAID_OFF"


class InstallmentStatus(StrEnum):
    SCHEDULED = "scheduled"
    DUE = "due"
    OVERDUE = "overdue"
    PAID = "paid"


class RestructuringKind(StrEnum):
    EXTENSION = "extension"
    REINSTALLMENT = "reinstallment"
    WAIVER = "waiver"


class Channel(StrEnum):
    SMS = "sms"
    VOICE = "voice"
    LETTER = "letter"
    EMAIL = "email"
    PUSH = "push"


class ActionKind(StrEnum):
    """What the planner can ask the workflow to do. Values are stable: they appear in
    idempotency keys, the audit log and the `next_action.kind` of the `state` query."""

    REMINDER = "reminder"  # before-due and due-today SMS
    OVERDUE_SMS = "overdue_sms"
    CREDIT_NOTICE = "credit_notice"
    VOICE_CALL = "voice_call"
    CREDIT_REPORT = "credit_report"
    ASSIGN_AGENT = "assign_agent"
    DEMAND_LETTER = "demand_letter"
    FIELD_VISIT = "field_visit"
    LEGAL_REFERRAL = "legal_referral"
    CHARGE_OFF = "charge_off"
    # Follow-ups owed after a cure or payoff.
    RELEASE_AGENT = "release_agent"
    CREDIT_UPDATE = "credit_update"
    # Nothing to do but bring DPD and the search attributes up to date (local midnight).
    REFRESH = "refresh"


CONTACT_KINDS = frozenset(
    {
        ActionKind.REMINDER,
        ActionKind.OVERDUE_SMS,
        ActionKind.CREDIT_NOTICE,
        ActionKind.VOICE_CALL,
        ActionKind.DEMAND_LETTER,
    }
)
