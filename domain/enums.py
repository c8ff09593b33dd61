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
    # The collector's desk: a broken promise's SMS, and the filings a hold leads to.
    BROKEN_PROMISE = "broken_promise"
    DISPUTE_OVERDUE = "dispute_overdue"  # a dispute still open after dispute_response_days
    HARDSHIP_REVIEW = "hardship_review"  # a hardship ended: the agent (or queue) reviews
    # Nothing to do but bring DPD and the search attributes up to date (local midnight).
    REFRESH = "refresh"


CONTACT_KINDS = frozenset(
    {
        ActionKind.REMINDER,
        ActionKind.OVERDUE_SMS,
        ActionKind.CREDIT_NOTICE,
        ActionKind.VOICE_CALL,
        ActionKind.DEMAND_LETTER,
        ActionKind.BROKEN_PROMISE,
    }
)


class HoldReason(StrEnum):
    """What holds the ladder, strongest first (`hold` shows the strongest)."""

    DISPUTE = "DISPUTE"
    HARDSHIP = "HARDSHIP"
    PROMISE = "PROMISE"


class PromiseStatus(StrEnum):
    OPEN = "open"
    KEPT = "kept"
    BROKEN = "broken"
    # An addition to DESIGN.md: the loan was cured before the promised date without any
    # payment since the promise (by an extension or a re-installment): neither kept nor
    # broken, and never counted against the borrower.
    CANCELLED = "cancelled"


class DisputeReason(StrEnum):
    AMOUNT = "amount"
    IDENTITY = "identity"
    FRAUD = "fraud"
    SERVICE = "service"
    OTHER = "other"


class DisputeOutcome(StrEnum):
    UPHELD = "upheld"
    REJECTED = "rejected"


class DisputeStatus(StrEnum):
    OPEN = "open"
    UPHELD = "upheld"
    REJECTED = "rejected"


class HardshipReason(StrEnum):
    JOB_LOSS = "job_loss"
    ILLNESS = "illness"
    DISASTER = "disaster"
    OTHER = "other"


class HardshipStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class LoggedChannel(StrEnum):
    """How a collector reached (or tried to reach) the borrower."""

    VOICE = "voice"  # an outbound call: inside the window and the call caps
    FIELD_VISIT = "field_visit"  # in person: at least two collectors, inside the window
    INBOUND = "inbound"  # the borrower called in


class ContactResult(StrEnum):
    REACHED = "reached"
    NO_ANSWER = "no_answer"
    WRONG_NUMBER = "wrong_number"
    REFUSED = "refused"


class OverdueReason(StrEnum):
    """Why the loan is overdue, as the collector learned it."""

    JOB_LOSS = "job_loss"
    ILLNESS = "illness"
    BUSINESS_LOSS = "business_loss"
    FORGOT = "forgot"
    DISPUTE = "dispute"
    UNWILLING = "unwilling"
    OTHER = "other"
