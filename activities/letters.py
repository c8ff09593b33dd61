"""Letters as printable documents: an A4 PDF per letter, and the print house's folder.

`letter_pdf(message)` lays out one letter (channel LETTER: the credit notice and the
demand letter) with `reportlab`: the lender's letterhead, the date, the subject as
heading, the loan id as reference, the text in paragraphs, a closing, and page numbers
when it runs over one page. The text is the rendered template exactly as it is recorded
in the outbox (`contact_attempt.rendered_text`): amounts arrive formatted by
`domain.money.format_amount`, nothing here formats money. zh-CN letters use reportlab's
built-in CID font STSong-Light, en letters Helvetica. Neither is embedded (no font file
to ship, a small file): the viewer supplies the glyphs. Acrobat, browsers and print
drivers have a Chinese font; a bare Linux viewer needs one installed (for poppler:
poppler-data and e.g. fonts-arphic-uming), else it shows empty boxes. The document is
deterministic for a given message and date (reportlab's invariant mode: a fixed
creation date and document id), so every retry of one contact produces the same bytes.

The PDF's metadata carry the subject (title), the lender (author) and the language,
never the address the message goes to: a document that is forwarded or archived must not
leak a phone number or an email address in its properties.

Where a letter goes:
- with SMTP configured and an email address for the borrower, `SmtpDeliverer` mails it
  with this PDF attached (`activities/providers.py`);
- otherwise it goes to the print house, the fallback deliverer. With `LETTERS_DIR` set
  that is `LetterFolder`: the PDF is written to `<LETTERS_DIR>/<loan_id>/<key>.pdf`
  (atomically, once per outbox key) for an operator to print and post; without it the
  letter is only logged.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import HRFlowable, Paragraph, SimpleDocTemplate, Spacer
from reportlab.platypus.flowables import Flowable

from activities.delivery import (
    Deliverer,
    DeliveryReceipt,
    DeliveryUnavailable,
    LoggingDeliverer,
    OutboundMessage,
)
from activities.templates import format_date, normalize_language
from domain.enums import Channel

log = logging.getLogger(__name__)

# The letterhead when no LENDER_NAME is configured: the name the voice script uses.
DEFAULT_LENDER = {"zh-CN": "贷款催收中心", "en": "Loan Collections Centre"}

CJK_FONT = "STSong-Light"
_LATIN = ("Helvetica", "Helvetica-Bold")
_MARGIN = 25 * mm


@dataclass(frozen=True)
class _Words:
    reference: str
    closing: tuple[str, ...]
    page: str  # "{n}" of "{total}"


_WORDS = {
    "zh-CN": _Words(reference="借款编号：{loan}", closing=("特此函告。",), page="第 {n} 页，共 {total} 页"),
    "en": _Words(
        reference="Loan reference: {loan}", closing=("Yours faithfully,",), page="Page {n} of {total}"
    ),
}


def _fonts(language: str, texts: list[str]) -> tuple[str, str]:
    """(regular, heading) font names. Helvetica only carries Western European characters
    (cp1252): an en letter with anything else in it (a name of a place, a stray CJK
    character) gets the CID font too rather than empty boxes."""
    latin = language == "en"
    if latin:
        try:
            for text in texts:
                text.encode("cp1252")
        except UnicodeEncodeError:
            latin = False
    if latin:
        return _LATIN
    if CJK_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))
    return CJK_FONT, CJK_FONT  # no bold face: the heading is set larger instead


def body_paragraphs(text: str, subject: str, loan_id: str) -> list[str]:
    """The paragraphs of a letter's text (one per line; blank lines dropped). The leading
    short lines that only repeat what the letterhead block already says (a title that
    the subject contains, "借款编号：L1" / "Loan reference: L1") are left out; the rest is
    the text word for word."""
    lines = [line.strip() for line in text.splitlines()]
    paragraphs = [line for line in lines if line]
    folded_subject = subject.casefold()
    while paragraphs:
        first = paragraphs[0]
        header_like = len(first) <= 60 and (
            first.casefold() in folded_subject or first.rstrip("。.").endswith(loan_id)
        )
        if not header_like or len(paragraphs) == 1:
            break
        paragraphs.pop(0)
    return paragraphs


def letter_date(message: OutboundMessage, on: date | None = None) -> date:
    """The date printed on the letter: `on`, else the borrower's local date of sending
    carried by the message, else today's date in UTC."""
    return on or message.local_date or datetime.now(UTC).date()


def letter_pdf(message: OutboundMessage, *, lender: str | None = None, on: date | None = None) -> bytes:
    """An A4 PDF of the letter in `message` (see the module docstring)."""
    language = normalize_language(message.language)
    words = _WORDS[language]
    lender_name = (lender or "").strip() or DEFAULT_LENDER[language]
    first_line = next((line for line in message.text.splitlines() if line.strip()), "")
    subject = " ".join((message.subject or first_line).split())
    dated = format_date(letter_date(message, on), language)
    reference = words.reference.format(loan=message.loan_id)
    paragraphs = body_paragraphs(message.text, subject, message.loan_id)
    regular, heading = _fonts(language, [lender_name, subject, message.text, reference])
    # CJK text has no spaces: reportlab must be told it may break between any two
    # characters (and keeps the punctuation rules of CJK line breaking).
    wrap = "CJK" if regular == CJK_FONT else None
    body = ParagraphStyle("body", fontName=regular, fontSize=11, leading=17, spaceAfter=7, wordWrap=wrap)
    styles = {
        "letterhead": ParagraphStyle("letterhead", fontName=heading, fontSize=16, leading=20, wordWrap=wrap),
        "date": ParagraphStyle("date", parent=body, alignment=TA_RIGHT, spaceAfter=2),
        "reference": ParagraphStyle("reference", parent=body, spaceAfter=10),
        "heading": ParagraphStyle(
            "heading", fontName=heading, fontSize=14, leading=20, spaceAfter=10, wordWrap=wrap
        ),
        "body": body,
        "signature": ParagraphStyle("signature", parent=body, spaceBefore=6),
    }

    def para(text: str, style: str) -> Paragraph:
        return Paragraph(escape(text), styles[style])

    story: list[Flowable] = [
        para(lender_name, "letterhead"),
        HRFlowable(width="100%", thickness=0.8, spaceBefore=4, spaceAfter=10),
        para(dated, "date"),
        para(reference, "reference"),
        para(subject, "heading"),
        *(para(p, "body") for p in paragraphs),
        Spacer(1, 6 * mm),
        *(para(line, "body") for line in words.closing),
        para(lender_name, "signature"),
    ]
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=_MARGIN,
        rightMargin=_MARGIN,
        topMargin=_MARGIN,
        bottomMargin=_MARGIN,
        title=subject,
        author=lender_name,
        subject=reference,
        creator=lender_name,
        lang=language,
        displayDocTitle=True,
        invariant=True,  # same message, same bytes: a fixed creation date and document id
    )
    doc.build(story, canvasmaker=_numbered_canvas(regular, words.page))
    return buffer.getvalue()


def _numbered_canvas(font: str, label: str) -> type[Canvas]:
    """A canvas that holds its pages back until the end, so it knows the page count and
    numbers the pages "n of total", and only when there is more than one."""

    class NumberedCanvas(Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._held: list[dict[str, Any]] = []

        def showPage(self) -> None:
            self._held.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._held)
            for n, state in enumerate(self._held, start=1):
                self.__dict__.update(state)
                if total > 1:
                    self.setFont(font, 9)
                    self.drawCentredString(A4[0] / 2, 12 * mm, label.format(n=n, total=total))
                super().showPage()
            super().save()

    return NumberedCanvas


# --- names -----------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(value: str, limit: int = 80) -> str:
    """`value` as a plain ASCII file name part: runs of anything but letters, digits,
    '_', '.', '-' become '_', no leading dot (no hidden file, no '..'), at most `limit`
    characters."""
    name = _UNSAFE.sub("_", value).lstrip(".")[:limit]
    return name or "_"


def attachment_name(message: OutboundMessage) -> str:
    """The PDF's file name in a mail: `<kind>-<loan_id>.pdf` ('letter' without a kind)."""
    return f"{safe_name(message.kind or 'letter', 40)}-{safe_name(message.loan_id, 60)}.pdf"


def folder_name(message_id: str) -> str:
    """The file name of one outbox key's letter in the folder. Sanitising can map two
    keys to one name ('L1/a' and 'L1:a'), so a short hash of the key itself follows."""
    digest = hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:12]
    return f"{safe_name(message_id)}-{digest}.pdf"


# --- the print house's folder --------------------------------------------------------


class LetterFolder:
    """The print house when letters are not mailed: each letter is written as a PDF to
    `<folder>/<loan_id>/<key>.pdf` for an operator to print and post; the other channels
    go to `then` (the log by default).

    Idempotent per outbox key: a file that exists is the letter already written (by an
    earlier attempt whose record was lost) and is left as it is. A file appears whole or
    not at all: written to a temporary file beside it, then renamed. The files are
    readable by the worker's user only (mkstemp's 0600): they hold a borrower's debts.
    A folder that cannot be written (full, no permission) is retried like a provider that
    is down."""

    def __init__(
        self, folder: str | os.PathLike[str], then: Deliverer | None = None, *, lender: str | None = None
    ) -> None:
        self.folder = Path(folder)
        self.then: Deliverer = then if then is not None else LoggingDeliverer()
        self.lender = lender

    def path_for(self, message: OutboundMessage) -> Path:
        return self.folder / safe_name(message.loan_id) / folder_name(message.message_id)

    def deliver(self, message: OutboundMessage) -> DeliveryReceipt:
        if message.channel != Channel.LETTER:
            return self.then.deliver(message)
        path = self.path_for(message)
        where = f"{path.parent.name}/{path.name}"
        try:
            if path.exists():
                log.info("letter already in the folder id=%s file=%s", message.message_id, where)
            else:
                self._write(path, letter_pdf(message, lender=self.lender))
                log.info("letter written id=%s file=%s", message.message_id, where)
        except OSError as e:
            raise DeliveryUnavailable(f"letters: cannot write the letter ({type(e).__name__})") from None
        return DeliveryReceipt(delivered=True, detail=f"letter: {where}")

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            # Two attempts of one key racing here write the same bytes: either rename wins.
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
