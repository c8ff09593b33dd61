"""Letters as printable PDFs (activities/letters.py): mailed as an attachment through a
real SMTP server (aiosmtpd, in process), or written to the print house's folder. The
mails are parsed with the standard library's email package and the PDFs read back with
pypdf: the text a reader (or a screen reader, or a search) gets out of them is checked,
not how the document was built."""

from __future__ import annotations

import io
import logging
import os
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path

import pypdf
import pytest
from sqlalchemy.engine import Engine

from activities.contacts import ContactActivities
from activities.delivery import LoggingDeliverer, OutboundMessage, RecordingDeliverer
from activities.letters import (
    DEFAULT_LENDER,
    LetterFolder,
    attachment_name,
    body_paragraphs,
    folder_name,
    letter_pdf,
)
from activities.providers import RoutingDeliverer, deliverer_from_settings, message_id_for
from activities.templates import format_date, render
from domain.enums import ActionKind, Channel
from models.wire import ContactParams
from settings import Settings
from tests.db_fixtures import db_url, engine  # noqa: F401
from tests.test_activities import add_borrower, contact, run
from tests.test_delivery import MAIL_FROM, Inbox, inbox, row, smtp_to  # noqa: F401

ADDRESS = "wang.li@example.com"
PARAMS = ContactParams(
    amount=110_016,
    due_date=date(2025, 3, 15),
    days_past_due=35,
    installment_seq=1,
    report_on=date(2025, 4, 30),
)
AMOUNT = {"zh-CN": "¥1,100.16", "en": "CNY 1,100.16"}
TITLE = {("zh-CN", "demand_letter"): "催告函", ("zh-CN", "credit_notice"): "征信告知"}
TITLE |= {("en", "demand_letter"): "demand for payment", ("en", "credit_notice"): "Credit reporting notice"}


def letter(
    template: str = "demand_letter",
    language: str = "zh-CN",
    *,
    key: str = "L1/-/demand/2025-04-20T09:00:00+08:00",
    loan_id: str = "L1",
    to: str = ADDRESS,
    local_date: date | None = date(2025, 4, 20),
) -> OutboundMessage:
    rendered = render(template, language, PARAMS, loan_id)
    return OutboundMessage(
        message_id=key,
        channel=Channel.LETTER,
        to=to,
        text=rendered.text,
        language=rendered.language,
        loan_id=loan_id,
        subject=rendered.subject,
        kind=template,
        local_date=local_date,
    )


def pdf_text(data: bytes) -> tuple[str, pypdf.PdfReader]:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages), reader


def unwire(text: str) -> str:
    """A received text part as it was sent: SMTP carries lines ending in CRLF."""
    return text.replace("\r\n", "\n").strip()


def flat(text: str) -> str:
    """Extracted text without line breaks: a wrapped line may split a phrase."""
    return "".join(text.split())


# --- the mailed letter ------------------------------------------------------------------


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("template", ["demand_letter", "credit_notice"])
def test_a_mailed_letter_is_the_text_plus_the_pdf(inbox: Inbox, template: str, language: str) -> None:  # noqa: F811
    sent = letter(template, language)
    assert smtp_to(inbox).deliver(sent).delivered
    (got,) = inbox.messages
    assert got.get_content_type() == "multipart/mixed"
    assert got["Message-ID"] == message_id_for(sent.message_id, MAIL_FROM)
    assert got["Subject"] == sent.subject and got["Content-Language"] == language
    body = got.get_body(("plain",))
    assert isinstance(body, EmailMessage) and body.get_content_charset() == "utf-8"
    assert unwire(body.get_content()) == sent.text
    (attached,) = got.iter_attachments()
    assert attached.get_content_type() == "application/pdf"
    assert attached.get_content_disposition() == "attachment"
    assert attached.get_filename() == f"{template}-L1.pdf"
    data = attached.get_content()
    assert isinstance(data, bytes) and data.startswith(b"%PDF-")

    text, reader = pdf_text(data)
    assert "L1" in text and AMOUNT[language] in text
    assert TITLE[language, template].casefold() in text.casefold()
    assert DEFAULT_LENDER[language] in text
    assert ("2025年4月20日" if language == "zh-CN" else "20 Apr 2025") in text
    # The body word for word (the PDF wraps lines; the words are the same).
    for paragraph in body_paragraphs(sent.text, sent.subject or "", "L1"):
        assert flat(paragraph) in flat(text)
    meta = reader.metadata
    assert meta is not None and meta.title == sent.subject and meta.author == DEFAULT_LENDER[language]
    assert len(reader.pages) == 1 and "Page" not in text and "第 1 页" not in text


def test_chinese_comes_back_out_of_the_pdf_as_characters(inbox: Inbox) -> None:  # noqa: F811
    """STSong-Light is a CID font with a Unicode CMap: the characters are extractable
    (searchable, copyable), not only drawn."""
    smtp_to(inbox).deliver(letter("demand_letter", "zh-CN"))
    (attached,) = inbox.messages[0].iter_attachments()
    text, reader = pdf_text(attached.get_content())
    assert "催告函" in text and "借款编号：L1" in text and "特此函告" in text
    assert "逾期未还金额合计¥1,100.16" in flat(text)
    resources = reader.pages[0]["/Resources"].get_object()
    assert isinstance(resources, pypdf.generic.DictionaryObject)
    fonts = resources["/Font"].get_object()
    assert isinstance(fonts, pypdf.generic.DictionaryObject)
    assert any(font.get_object()["/BaseFont"] == "/STSong-Light" for font in fonts.values())


def test_an_email_has_no_attachment(inbox: Inbox) -> None:  # noqa: F811
    mail = letter("demand_letter", "en")
    email_kind = OutboundMessage(**{**mail.__dict__, "channel": Channel.EMAIL})
    assert smtp_to(inbox).deliver(email_kind).delivered
    (got,) = inbox.messages
    assert got.get_content_type() == "text/plain" and not got.is_multipart()
    assert list(got.iter_attachments()) == [] and unwire(got.get_content()) == mail.text


def test_the_lender_is_configurable_and_the_address_is_nowhere_in_the_pdf(inbox: Inbox) -> None:  # noqa: F811
    sent = letter("demand_letter", "en", to="13812345678@example.com")
    smtp_to(inbox, lender="Example Finance Ltd").deliver(sent)
    (attached,) = inbox.messages[0].iter_attachments()
    data = attached.get_content()
    text, reader = pdf_text(data)
    assert "Example Finance Ltd" in text and reader.metadata is not None
    assert reader.metadata.author == "Example Finance Ltd"
    # Neither the address nor the phone number in it: not in the text, not in the
    # metadata, not anywhere in the file's bytes.
    assert "13812345678" not in text and "@" not in text
    assert not any("@" in str(v) or "13812345678" in str(v) for v in reader.metadata.values())
    assert b"13812345678" not in data and b"example.com" not in data


def test_the_pdf_is_the_same_for_the_same_message() -> None:
    assert letter_pdf(letter()) == letter_pdf(letter())
    assert letter_pdf(letter()) != letter_pdf(letter(local_date=date(2025, 4, 21)))
    text, _ = pdf_text(letter_pdf(letter(), on=date(2025, 5, 1)))
    assert "2025年5月1日" in text


def test_a_long_letter_runs_over_pages_with_page_numbers() -> None:
    paragraph = "Please pay the overdue amount of CNY 1,100.16 on loan L1 promptly. " * 12
    long = OutboundMessage(
        message_id="k",
        channel=Channel.LETTER,
        to="borrower:B1",
        text="\n".join([paragraph] * 8),
        language="en",
        loan_id="L1",
        subject="Formal demand for payment: loan L1",
    )
    reader = pypdf.PdfReader(io.BytesIO(letter_pdf(long)))
    pages = [page.extract_text() for page in reader.pages]
    assert len(pages) >= 2
    for n, page in enumerate(pages, start=1):
        assert f"Page {n} of {len(pages)}" in page
    assert "Yours faithfully" in pages[-1]


def test_header_lines_the_letterhead_already_says_are_not_repeated() -> None:
    zh = letter("demand_letter", "zh-CN")
    paragraphs = body_paragraphs(zh.text, zh.subject or "", "L1")
    assert paragraphs[0].startswith("截至本函发出之日") and len(paragraphs) == 3
    en = letter("credit_notice", "en")  # one paragraph: kept whole
    assert body_paragraphs(en.text, en.subject or "", "L1") == [en.text]


def test_file_names_are_plain_ascii() -> None:
    odd = letter(loan_id="../贷款 7", key="../../etc/passwd")
    assert attachment_name(odd) == "demand_letter-_7.pdf"
    assert attachment_name(OutboundMessage("k", Channel.LETTER, "x", "t", "en", "L1")) == "letter-L1.pdf"
    name = folder_name("L1/-/demand/2025-04-20T09:00:00+08:00")
    assert name.startswith("L1_-_demand_2025-04-20T09_00_00_08_00-") and name.endswith(".pdf")
    assert folder_name("L1/a") != folder_name("L1:a")  # the same sanitised, not the same file


# --- the print house's folder -----------------------------------------------------------


def test_the_folder_gets_one_file_per_key_written_once(tmp_path: Path) -> None:
    folder = LetterFolder(tmp_path, RecordingDeliverer())
    sent = letter(to="borrower:B1")
    receipt = folder.deliver(sent)
    path = folder.path_for(sent)
    assert receipt.delivered and receipt.detail == f"letter: L1/{path.name}"
    assert path.parent == tmp_path / "L1" and path.read_bytes() == letter_pdf(sent)
    first = path.stat()
    assert first.st_mode & 0o777 == 0o600  # a borrower's debts: the worker's user only
    # The retry (the worker died before recording the first attempt): the same file,
    # left as it was; a letter dated another day would not replace it.
    assert folder.deliver(letter(to="borrower:B1", local_date=date(2025, 4, 21))) == receipt
    again = path.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert path.read_bytes() == letter_pdf(sent)
    # Another key, another file; nothing half-written left behind.
    folder.deliver(letter("credit_notice", key="L1/-/notice/2025-04-20T09:00:00+08:00", to="borrower:B1"))
    assert sorted(p.name.startswith(".") for p in (tmp_path / "L1").iterdir()) == [False, False]
    text, _ = pdf_text(path.read_bytes())
    assert "L1" in text and "¥1,100.16" in text


def test_the_folder_stays_inside_its_folder_and_passes_other_channels_on(tmp_path: Path) -> None:
    then = RecordingDeliverer()
    folder = LetterFolder(tmp_path / "letters", then)
    sneaky = letter(loan_id="../../outside", key="../../x", to="borrower:B1")
    folder.deliver(sneaky)
    (written,) = (tmp_path / "letters").rglob("*.pdf")
    assert written.parent.parent == tmp_path / "letters"
    sms = OutboundMessage("k-sms", Channel.SMS, "13812345678", "t", "zh-CN", "L1")
    assert folder.deliver(sms).delivered and then.sent == [sms]


def test_letters_dir_from_the_environment_writes_the_unmailed_letters(
    engine: Engine,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in ("SMTP_URL", "MAIL_FROM", "SMS_WEBHOOK_URL", "VOICE_WEBHOOK_URL", "WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LETTERS_DIR", str(tmp_path))
    monkeypatch.setenv("LENDER_NAME", "示例消费金融有限公司")
    caplog.set_level(logging.WARNING)
    deliverer = deliverer_from_settings(Settings())
    assert isinstance(deliverer, LetterFolder) and isinstance(deliverer.then, LoggingDeliverer)
    assert "NO DELIVERY PROVIDER CONFIGURED" in caplog.text
    add_borrower(engine, email=ADDRESS)  # letters are not mailed: the postal reference
    acts = ContactActivities(engine, deliverer)
    request = contact(
        "L1:demand_letter:1", kind=ActionKind.DEMAND_LETTER, channel=Channel.LETTER, template="demand_letter"
    )
    out = run(acts.send_contact, request)
    assert out.status == "delivered"
    (written,) = tmp_path.rglob("*.pdf")
    saved = row(engine, "L1:demand_letter:1")
    assert saved.line == "postal" and saved.provider_answer == f"letter: L1/{written.name}"
    text, reader = pdf_text(written.read_bytes())
    assert "催告函" in text and "¥1,100.16" in text and "示例消费金融有限公司" in text
    assert reader.metadata is not None and reader.metadata.author == "示例消费金融有限公司"
    assert run(acts.send_contact, request) == out and len(list(tmp_path.rglob("*.pdf"))) == 1


def test_with_smtp_the_letters_without_an_email_go_to_the_folder(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("SMS_WEBHOOK_URL", "VOICE_WEBHOOK_URL", "WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMTP_URL", "smtp://127.0.0.1:2525")
    monkeypatch.setenv("MAIL_FROM", MAIL_FROM)
    monkeypatch.setenv("LETTERS_DIR", str(tmp_path))
    router = deliverer_from_settings(Settings())
    assert isinstance(router, RoutingDeliverer) and router.letters_by_mail
    assert isinstance(router.fallback, LetterFolder)
    assert router.route(letter(to="borrower:B2")) is router.fallback
    assert router.route(letter()) is router.routes[Channel.LETTER]


def test_an_unwritable_folder_is_retried(tmp_path: Path) -> None:
    from activities.delivery import DeliveryUnavailable

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(DeliveryUnavailable, match="cannot write"):
        LetterFolder(blocker).deliver(letter(to="borrower:B1"))
    assert os.listdir(tmp_path) == ["not-a-folder"]


def test_a_sent_letter_is_dated_on_the_borrowers_day_and_named_by_its_kind(
    engine: Engine,  # noqa: F811
) -> None:
    """20:00 UTC is already the next morning in Shanghai: the letter the outbox hands over
    carries the borrower's local date (the same on every retry) and its kind."""
    add_borrower(engine)
    deliverer = RecordingDeliverer()
    request = contact(
        "L1:demand_letter:late",
        kind=ActionKind.DEMAND_LETTER,
        channel=Channel.LETTER,
        template="demand_letter",
        scheduled_at=datetime(2025, 3, 1, 20, 0, tzinfo=UTC),
        timezone="Asia/Shanghai",
    )
    assert run(ContactActivities(engine, deliverer).send_contact, request).status == "delivered"
    (sent,) = deliverer.sent
    assert (sent.kind, sent.local_date) == ("demand_letter", date(2025, 3, 2))
    assert attachment_name(sent) == "demand_letter-L1.pdf"
    text, _reader = pdf_text(letter_pdf(sent))
    assert format_date(date(2025, 3, 2), "zh-CN") in text
