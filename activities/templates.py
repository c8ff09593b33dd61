"""Message templates in zh-CN (default) and en.

`render(template, language, params, loan_id)` returns the text for one contact. The
text never contains the borrower's name or contact details: only the loan reference,
amounts, dates and days past due. Amounts are formatted from minor units by
`domain.money.format_amount` in the message's language: zh-CN "¥1,100.16", en "CNY 1,100.16".
Every template also has an email subject (used for email, and for a letter sent by mail).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from domain.money import format_amount
from models.wire import ContactParams

DEFAULT_LANGUAGE = "zh-CN"
LANGUAGES = ("zh-CN", "en")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class TemplateError(ValueError):
    """Unknown template name (never succeeds on retry)."""


def normalize_language(language: str | None) -> str:
    """The supported language for a borrower preference ('en-US' -> 'en'), default zh-CN."""
    if not language:
        return DEFAULT_LANGUAGE
    lang = language.strip()
    if lang in LANGUAGES:
        return lang
    if lang.lower().startswith("en"):
        return "en"
    return DEFAULT_LANGUAGE


def format_date(d: date | None, language: str = DEFAULT_LANGUAGE) -> str:
    """zh-CN '2024年3月15日', en '15 Mar 2024' ('-' when unknown)."""
    if d is None:
        return "-"
    if normalize_language(language) == "zh-CN":
        return f"{d.year}年{d.month}月{d.day}日"
    return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"


@dataclass(frozen=True)
class _Ctx:
    loan: str
    amount: str
    due: str
    dpd: int
    seq_zh: str
    seq_en: str
    report_on: str


Template = Callable[[_Ctx], str]

_ZH: dict[str, Template] = {
    "reminder_t3": lambda c: (
        f"【还款提醒】您的借款（编号{c.loan}）{c.seq_zh}应还款{c.amount}，"
        f"还款日为{c.due}（3天后）。请提前确保还款账户余额充足。"
    ),
    "reminder_t1": lambda c: (
        f"【还款提醒】您的借款（编号{c.loan}）{c.seq_zh}应还款{c.amount}，"
        f"还款日为明天（{c.due}）。请确保还款账户余额充足。"
    ),
    "reminder_due_today": lambda c: (
        f"【还款提醒】您的借款（编号{c.loan}）{c.seq_zh}应还款{c.amount}，"
        f"今天（{c.due}）为还款日，请于今日内完成还款。"
    ),
    "overdue_sms": lambda c: (
        f"【逾期提醒】您的借款（编号{c.loan}）已逾期{c.dpd}天，"
        f"逾期金额{c.amount}（应还款日{c.due}）。请尽快还款，以免产生罚息。"
    ),
    "credit_notice": lambda c: (
        f"【征信告知】您的借款（编号{c.loan}）已逾期{c.dpd}天，逾期金额{c.amount}。"
        f"根据《征信业管理条例》，如您在{c.report_on}前仍未还清逾期款项，"
        f"我们将于{c.report_on}或之后向金融信用信息基础数据库（征信系统）报送逾期信息。"
    ),
    "voice_call": lambda c: (
        f"您好，这里是贷款催收中心。您的借款（编号{c.loan}）已逾期{c.dpd}天，"
        f"逾期金额{c.amount}，原应还款日为{c.due}。请您尽快还款。"
        f"如有困难，可申请延期或分期还款。按1转人工服务。"
    ),
    "demand_letter": lambda c: (
        f"催告函\n\n借款编号：{c.loan}\n\n"
        f"截至本函发出之日，您的上述借款已逾期{c.dpd}天，逾期未还金额合计{c.amount}"
        f"（最早应还款日{c.due}）。\n"
        f"请您自收到本函之日起尽快清偿上述款项。逾期不还的，我们将依法采取包括"
        f"提起诉讼在内的措施，由此产生的费用及不良信用记录由您自行承担。\n"
        f"如对欠款有异议或需要协商还款方案，请联系我们。"
    ),
    "broken_promise": lambda c: (
        f"【还款提醒】您承诺的还款未按约定完成。您的借款（编号{c.loan}）已逾期{c.dpd}天，"
        f"逾期金额{c.amount}。请尽快还款；如有困难，请联系您的客户经理协商。"
    ),
}

_EN: dict[str, Template] = {
    "reminder_t3": lambda c: (
        f"Payment reminder: {c.seq_en}of your loan {c.loan}, {c.amount}, is due on "
        f"{c.due} (in 3 days). Please make sure the funds are in your repayment account."
    ),
    "reminder_t1": lambda c: (
        f"Payment reminder: {c.seq_en}of your loan {c.loan}, {c.amount}, is due "
        f"tomorrow ({c.due}). Please make sure the funds are in your repayment account."
    ),
    "reminder_due_today": lambda c: (
        f"Payment reminder: {c.seq_en}of your loan {c.loan}, {c.amount}, is due today "
        f"({c.due}). Please pay before the end of the day."
    ),
    "overdue_sms": lambda c: (
        f"Overdue notice: your loan {c.loan} is {c.dpd} days past due. Amount overdue: "
        f"{c.amount} (due {c.due}). Please pay as soon as possible to avoid penalty interest."
    ),
    "credit_notice": lambda c: (
        f"Credit reporting notice: your loan {c.loan} is {c.dpd} days past due with "
        f"{c.amount} overdue. Unless the overdue amount is paid before {c.report_on}, it "
        f"will be reported to the credit reference system on or after {c.report_on}."
    ),
    "voice_call": lambda c: (
        f"Hello, this is the loan collections centre. Your loan {c.loan} is {c.dpd} days "
        f"past due, with {c.amount} overdue since {c.due}. Please pay as soon as possible. "
        f"If you are having difficulty, you may apply for an extension or an installment "
        f"plan. Press 1 to speak to an agent."
    ),
    "demand_letter": lambda c: (
        f"FORMAL DEMAND FOR PAYMENT\n\nLoan reference: {c.loan}\n\n"
        f"As of the date of this letter your loan is {c.dpd} days past due and {c.amount} "
        f"is overdue (earliest due date {c.due}).\n"
        f"Please pay the overdue amount promptly. If it remains unpaid we may take legal "
        f"action, including court proceedings, and the resulting costs and negative credit "
        f"record will be your responsibility.\n"
        f"If you dispute this debt or wish to agree a repayment plan, please contact us."
    ),
    "broken_promise": lambda c: (
        f"Your promised payment on loan {c.loan} has not arrived. The loan is {c.dpd} days "
        f"past due with {c.amount} overdue. Please pay as soon as you can, or call your "
        f"collector to agree a new plan if you are in difficulty."
    ),
}

TEMPLATES: dict[str, dict[str, Template]] = {"zh-CN": _ZH, "en": _EN}
TEMPLATE_NAMES = frozenset(_ZH)

# Email subjects, one per template (so per contact kind; the reminders per timing).
_ZH_SUBJECTS: dict[str, Template] = {
    "reminder_t3": lambda c: f"还款提醒：借款{c.loan}{c.seq_zh}应还{c.amount}，{c.due}到期",
    "reminder_t1": lambda c: f"还款提醒：借款{c.loan}{c.seq_zh}应还{c.amount}，明天到期",
    "reminder_due_today": lambda c: f"还款提醒：借款{c.loan}{c.seq_zh}应还{c.amount}，今天到期",
    "overdue_sms": lambda c: f"逾期提醒：借款{c.loan}已逾期{c.dpd}天，逾期金额{c.amount}",
    "credit_notice": lambda c: f"征信告知：借款{c.loan}逾期信息将于{c.report_on}起报送征信系统",
    "voice_call": lambda c: f"逾期提醒：借款{c.loan}已逾期{c.dpd}天，请尽快还款",
    "demand_letter": lambda c: f"催告函：借款{c.loan}逾期未还{c.amount}",
    "broken_promise": lambda c: f"还款提醒：借款{c.loan}承诺的还款未到账",
}

_EN_SUBJECTS: dict[str, Template] = {
    "reminder_t3": lambda c: f"Payment reminder: {c.amount} on loan {c.loan} is due on {c.due}",
    "reminder_t1": lambda c: f"Payment reminder: {c.amount} on loan {c.loan} is due tomorrow",
    "reminder_due_today": lambda c: f"Payment reminder: {c.amount} on loan {c.loan} is due today",
    "overdue_sms": lambda c: f"Overdue notice: loan {c.loan} is {c.dpd} days past due ({c.amount})",
    "credit_notice": lambda c: f"Credit reporting notice: loan {c.loan}, reporting from {c.report_on}",
    "voice_call": lambda c: f"Overdue notice: loan {c.loan} is {c.dpd} days past due",
    "demand_letter": lambda c: f"Formal demand for payment: loan {c.loan}, {c.amount} overdue",
    "broken_promise": lambda c: f"Payment reminder: your promised payment on loan {c.loan} has not arrived",
}

SUBJECTS: dict[str, dict[str, Template]] = {"zh-CN": _ZH_SUBJECTS, "en": _EN_SUBJECTS}


@dataclass(frozen=True)
class Rendered:
    language: str
    text: str
    subject: str


def render(template: str, language: str | None, params: ContactParams, loan_id: str) -> Rendered:
    """Render `template` in the borrower's language (zh-CN when unknown)."""
    if template not in TEMPLATE_NAMES:
        raise TemplateError(f"template: unknown template {template!r}")
    lang = normalize_language(language)
    seq = params.installment_seq
    ctx = _Ctx(
        loan=loan_id,
        amount=format_amount(params.amount, params.currency, language=lang),
        due=format_date(params.due_date, lang),
        dpd=params.days_past_due,
        seq_zh=f"第{seq}期" if seq is not None else "本期",
        seq_en=f"installment {seq} " if seq is not None else "the installment ",
        report_on=format_date(params.report_on, lang),
    )
    return Rendered(language=lang, text=TEMPLATES[lang][template](ctx), subject=SUBJECTS[lang][template](ctx))
