"""The local stack's inbox: stand-ins for the mail server and the SMS / voice providers,
so that `./run` shows the messages the demo book really sends.

- an SMTP sink (aiosmtpd): every mail the worker sends (SMTP_URL) is stored with its
  headers and its plain text in `<dir>/mail.jsonl`;
- a webhook sink (the standard library's http.server): `POST /sms` and `POST /voice`
  take the worker's signed JSON deliveries (SMS_WEBHOOK_URL, VOICE_WEBHOOK_URL), check
  `X-Signature` (HMAC-SHA256 of the raw body with WEBHOOK_SECRET, constant time: 401
  when it is missing or wrong), keep each `Idempotency-Key` once (a retry is answered
  200 again, not stored twice) and store the message in `<dir>/sms.jsonl` or
  `<dir>/voice.jsonl`. `GET /healthz` answers 200.

Addresses are stored masked (138****0016, d***@example.com), as the project logs them.

With `--api-url` the sink also reports back, as a real provider does, to the inbound API
(api.py), in the background after it has answered the webhook (a report never delays
the answer), signed like the deliveries (`X-Signature: sha256=<hex HMAC-SHA256 of the
raw body with WEBHOOK_SECRET>`):

- an SMS it stored: `POST /receipts {message_id, status: "delivered", detail}` (the
  outbox row goes from `accepted` to `delivered`);
- a voice call it stored: `POST /calls {message_id, result, at}` (the call's outcome,
  `--call-result`, `reached` by default; `at` now, in UTC with its offset), then
  `POST /receipts` (`delivered` when the call was answered: reached or refused; else
  `failed` with the result as the detail).

Mail is not reported: the worker counts the SMTP server's acceptance as delivered (the
outbox row is final at once, a receipt would change nothing) and a mail's Message-ID is
a hash of the outbox key, not the key. Reports wait `--report-delay` seconds first (a
receipt comes after the provider's answer, as in life), are retried with backoff on a
refused connection, a timeout or a 5xx (the API may not be up yet), are given up on a
4xx, and each is written down in `<dir>/reports.jsonl`. Logs name message ids and HTTP
codes only, never an address or a text.

    python -m scripts.inbox serve --dir .state/inbox --smtp-port 8025 --http-port 8026 \
        [--api-url http://127.0.0.1:8000] [--call-result reached]
    python -m scripts.inbox latest [-n 10] [--dir .state/inbox] [--db URL]   # the latest messages

`latest` shows each message's outbox status (and what was reported) when it finds the
database: `--db`, else DATABASE_URL, else `collections.db` next to the inbox directory.
`serve` reads WEBHOOK_SECRET from the environment (never from the command line, which
other users can see) and runs until SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import hmac
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python scripts/inbox.py` from anywhere
    sys.path.insert(0, str(ROOT))

from activities.delivery import mask_address  # noqa: E402
from activities.providers import message_id_for, sign  # noqa: E402

DEFAULT_DIR = ROOT / ".state" / "inbox"
FILES = {"mail": "mail.jsonl", "sms": "sms.jsonl", "voice": "voice.jsonl"}
WEBHOOK_CHANNELS = {"/sms": "sms", "/voice": "voice"}
REPORTS = "reports.jsonl"
# aiosmtpd's logger: at INFO it logs every SMTP command and each recipient's address.
SMTP_SINK_LOGGER = "mail.log"
MAX_BODY = 64 * 1024
TEXT_MAX = 4000  # characters of a message's text kept
# What a call can come to (api.py's CallIn.result); answered: the borrower picked up.
CALL_RESULTS = ("reached", "no_answer", "wrong_number", "refused")
ANSWERED = frozenset({"reached", "refused"})


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Inbox:
    """JSON lines, one file per channel; appends are serialised (the SMTP sink and the
    webhook sink's threads write concurrently)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seen: set[str] = {
            str(r.get("message_id")) for r in read_messages(directory) if r.get("channel") != "mail"
        }

    def add(self, kind: str, record: dict[str, Any], key: str | None = None) -> bool:
        """Store `record`; False (and nothing stored) when `key` was stored before."""
        line = json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n"
        with self._lock:
            if key is not None:
                if key in self._seen:
                    return False
                self._seen.add(key)
            with open(self.dir / FILES[kind], "a", encoding="utf-8") as f:
                f.write(line)
        return True

    def add_report(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, open(self.dir / REPORTS, "a", encoding="utf-8") as f:
            f.write(line)


def read_messages(directory: Path) -> list[dict[str, Any]]:
    """Every stored message, oldest first."""
    rows: list[dict[str, Any]] = []
    for name in FILES.values():
        path = directory / name
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
    rows.sort(key=lambda r: str(r.get("received_at", "")))
    return rows


# --- SMTP ----------------------------------------------------------------------------


class MailHandler:
    """aiosmtpd handler: every mail accepted and stored (headers and plain text)."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode("utf-8")
        mail = email.message_from_bytes(raw, policy=email.policy.default)
        body = mail.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        text = text.replace("\r\n", "\n").strip()
        headers: dict[str, str] = {}
        for name, value in mail.items():
            value = str(value)
            if name.lower() in ("to", "cc", "bcc"):
                value = ", ".join(mask_address(a.strip()) for a in value.split(","))
            headers[name] = value
        self.inbox.add(
            "mail",
            {
                "received_at": now_iso(),
                "channel": "mail",
                "message_id": str(mail.get("Message-ID", "")),
                "from": str(envelope.mail_from),
                "to": [mask_address(str(r)) for r in envelope.rcpt_tos],
                "subject": str(mail.get("Subject", "")),
                "language": str(mail.get("Content-Language", "")),
                "headers": headers,
                "text": text[:TEXT_MAX],
            },
        )
        return "250 Message accepted for delivery"


# --- reports back to the API ---------------------------------------------------------


def log(text: str) -> None:
    sys.stderr.write(f"{now_iso()} {text}\n")
    sys.stderr.flush()


class Reporter:
    """Delivery receipts and call outcomes, POSTed signed to the inbound API from a small
    thread pool, after the webhook was answered. A refused connection, a timeout, a 408,
    a 429 or a 5xx is retried with doubling backoff (at least the API's Retry-After,
    capped) up to `attempts` times; any other 4xx is final. Every report ends in one
    line of `<dir>/reports.jsonl` and, unless it succeeded, one log line (ids and codes
    only)."""

    def __init__(
        self,
        inbox: Inbox,
        api_url: str,
        secret: str,
        *,
        call_result: str = "reached",
        delay: float = 1.0,
        attempts: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        timeout: float = 10.0,
    ) -> None:
        if call_result not in CALL_RESULTS:
            raise ValueError(f"call_result must be one of {', '.join(CALL_RESULTS)}, not {call_result!r}")
        self.inbox = inbox
        self.api_url = api_url.rstrip("/")
        self.call_result = call_result
        self.delay = delay
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._secret = secret
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="report")
        self._stop = threading.Event()

    def accepted(self, channel: str, message_id: str) -> None:
        """A webhook message was stored (the first time): report on it in the background."""
        if channel == "sms":
            self._pool.submit(self._sms, message_id)
        elif channel == "voice":
            self._pool.submit(self._voice, message_id)

    def close(self) -> None:
        """Stop: reports not started are dropped, running ones stop retrying (a POST in
        flight ends within the client's timeout)."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def _sms(self, message_id: str) -> None:
        if self._stop.wait(self.delay):
            return
        self.post(
            "/receipts", {"message_id": message_id, "status": "delivered", "detail": "local inbox: delivered"}
        )

    def _voice(self, message_id: str) -> None:
        if self._stop.wait(self.delay):
            return
        result = self.call_result
        at = datetime.now(UTC).isoformat(timespec="seconds")
        if self.post("/calls", {"message_id": message_id, "result": result, "at": at}):
            status = "delivered" if result in ANSWERED else "failed"
            self.post("/receipts", {"message_id": message_id, "status": status, "detail": f"call: {result}"})

    def post(self, route: str, payload: dict[str, Any]) -> bool:
        """POST one signed report, retried while the API is away. True once it took it."""
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json", "X-Signature": sign(body, self._secret)}
        message_id = str(payload.get("message_id"))
        wait = self.backoff
        code: int | None = None
        why = ""
        for attempt in range(1, self.attempts + 1):
            retry_after = 0.0
            try:
                answer = self._client.post(self.api_url + route, content=body, headers=headers)
            except httpx.HTTPError as exc:  # refused (the API is not up yet), reset, timeout
                code, why = None, type(exc).__name__
            else:
                code, why = answer.status_code, _api_detail(answer)
                if 200 <= code < 300:
                    self._written(route, payload, code, "ok", attempt)
                    return True
                if code < 500 and code not in (408, 429):
                    log(f"report {route} id={message_id}: refused {code} ({why}), not retried")
                    self._written(route, payload, code, "refused", attempt, why)
                    return False
                retry_after = _seconds(answer.headers.get("Retry-After"))
            if attempt == self.attempts:
                break
            if self._stop.wait(min(max(wait, retry_after), self.max_backoff)):
                why += ", stopping"
                break
            wait *= 2
        log(f"report {route} id={message_id}: gave up after {attempt} attempts ({code or why})")
        self._written(route, payload, code, "gave up", attempt, why)
        return False

    def _written(
        self,
        route: str,
        payload: dict[str, Any],
        code: int | None,
        outcome: str,
        attempts: int,
        why: str = "",
    ) -> None:
        record = {
            "reported_at": now_iso(),
            "route": route,
            **payload,
            "http_status": code,
            "outcome": outcome,
            "attempts": attempts,
        }
        if why:
            record["why"] = why
        self.inbox.add_report(record)


def _api_detail(answer: httpx.Response) -> str:
    """The API's short reason (its `problem`, else the detail), for a log line."""
    try:
        data = answer.json()
    except ValueError:
        return ""
    if isinstance(data, dict):
        return str(data.get("problem") or data.get("detail") or "")[:120]
    return ""


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


# --- webhooks ------------------------------------------------------------------------


def make_handler(inbox: Inbox, secret: str, reporter: Reporter | None = None) -> type[BaseHTTPRequestHandler]:
    class WebhookHandler(BaseHTTPRequestHandler):
        server_version = "local-inbox/1"

        def log_message(self, format: str, *args: Any) -> None:  # no bodies, no addresses
            sys.stderr.write(f"{now_iso()} {self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")

        def answer(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self.answer(200, {"status": "ok"})
            else:
                self.answer(404, {"detail": "not found"})

        def do_POST(self) -> None:
            channel = WEBHOOK_CHANNELS.get(self.path)
            if channel is None:
                self.answer(404, {"detail": "POST /sms or /voice"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.answer(413, {"detail": f"the body must be 0..{MAX_BODY} bytes"})
                return
            body = self.rfile.read(length)
            given = self.headers.get("X-Signature") or ""
            if not secret or not hmac.compare_digest(given.encode(), sign(body, secret).encode()):
                self.answer(401, {"detail": "missing or bad X-Signature"})
                return
            try:
                message = json.loads(body)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
                message_id = str(message["message_id"])
                text = str(message["text"])
            except (ValueError, KeyError) as exc:
                self.answer(400, {"detail": f"bad body: {type(exc).__name__}"})
                return
            key = self.headers.get("Idempotency-Key") or message_id
            stored = inbox.add(
                channel,
                {
                    "received_at": now_iso(),
                    "channel": str(message.get("channel", channel)),
                    "message_id": message_id,
                    "idempotency_key": key,
                    "loan_id": message.get("loan_id"),
                    "to": mask_address(str(message.get("to", ""))),
                    "language": message.get("language"),
                    "text": text[:TEXT_MAX],
                },
                key=key,
            )
            self.answer(200, {"accepted": True, "message_id": message_id, "duplicate": not stored})
            if stored and reporter is not None:  # after the answer: it never waits for the API
                reporter.accepted(channel, message_id)

    return WebhookHandler


# --- the whole -----------------------------------------------------------------------


def serve(
    directory: Path,
    smtp_port: int,
    http_port: int,
    secret: str,
    host: str = "127.0.0.1",
    api_url: str | None = None,
    call_result: str = "reached",
    report_delay: float = 1.0,
) -> int:
    from aiosmtpd.controller import Controller  # a dev dependency: imported when serving

    if not secret:
        print("error: WEBHOOK_SECRET is not set: the webhook sink cannot verify signatures", file=sys.stderr)
        return 2
    inbox = Inbox(directory)
    reporter = (
        Reporter(inbox, api_url, secret, call_result=call_result, delay=report_delay) if api_url else None
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    # Never the addresses (aiosmtpd logs each recipient at INFO): its warnings only.
    logging.getLogger(SMTP_SINK_LOGGER).setLevel(logging.WARNING)
    smtp = Controller(MailHandler(inbox), hostname=host, port=smtp_port)
    smtp.start()
    http = ThreadingHTTPServer((host, http_port), make_handler(inbox, secret, reporter))
    http.daemon_threads = True
    thread = threading.Thread(target=http.serve_forever, name="webhook-sink", daemon=True)
    thread.start()
    reports = (
        f"receipts and call results ({call_result}) to {api_url}" if reporter else "no reports (no --api-url)"
    )
    print(
        f"{now_iso()} inbox: SMTP on {host}:{smtp_port}, webhooks on http://{host}:{http_port}/sms "
        f"and /voice, stored under {directory}; {reports}",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        http.shutdown()
        http.server_close()
        smtp.stop()
        if reporter is not None:
            reporter.close()
    print(f"{now_iso()} inbox: stopped", file=sys.stderr, flush=True)
    return 0


def read_reports(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """The reports sent back to the API, by message id, oldest first."""
    found: dict[str, list[dict[str, Any]]] = {}
    path = directory / REPORTS
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            report = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(report, dict):
            found.setdefault(str(report.get("message_id")), []).append(report)
    return found


def database_url(directory: Path, given: str | None = None) -> str | None:
    """Where the outbox is: `given`, DATABASE_URL, or the stack's collections.db next to
    the inbox directory when it exists."""
    if given or os.environ.get("DATABASE_URL"):
        return given or os.environ["DATABASE_URL"]
    db = directory.resolve().parent / "collections.db"
    return f"sqlite:///{db}" if db.exists() else None


def outbox_statuses(url: str, rows: Sequence[dict[str, Any]]) -> dict[int, str]:
    """Each stored message's outbox status (by its index in `rows`): webhook messages by
    their message id (the outbox key); mails by their Message-ID, derived from the key."""
    from sqlmodel import Session, col, select

    from models.db import make_engine
    from models.tables import ContactAttempt

    engine = make_engine(url)
    found: dict[int, str] = {}
    try:
        with Session(engine) as session:
            keys = [str(r.get("message_id")) for r in rows if r.get("channel") != "mail"]
            by_key = {
                c.idempotency_key: c.status
                for c in session.exec(
                    select(ContactAttempt).where(col(ContactAttempt.idempotency_key).in_(keys))
                )
            }
            mails = [r for r in rows if r.get("channel") == "mail"]
            by_mail_id: dict[str, str] = {}
            if mails:
                senders = {str(r.get("from") or "") for r in mails}
                mailed = select(ContactAttempt).where(col(ContactAttempt.channel).in_(("email", "letter")))
                for c in session.exec(mailed):
                    for sender in senders:
                        by_mail_id[message_id_for(c.idempotency_key, sender)] = c.status
            for n, r in enumerate(rows):
                table = by_mail_id if r.get("channel") == "mail" else by_key
                status = table.get(str(r.get("message_id")))
                if status is not None:
                    found[n] = status
    finally:
        engine.dispose()
    return found


def describe(
    row: dict[str, Any],
    width: int = 100,
    status: str | None = None,
    reports: Sequence[dict[str, Any]] = (),
) -> str:
    when = str(row.get("received_at", ""))[:19].replace("T", " ")
    channel = str(row.get("channel", "?"))
    to = row.get("to")
    to_text = ", ".join(to) if isinstance(to, list) else str(to or "")
    loan = str(row.get("loan_id") or "")
    head = f"{when}  {channel:<6} {to_text:<22} {loan}"
    notes = []
    if status is not None:
        notes.append(f"outbox {status}")
    for r in reports:
        said = r.get("status") or r.get("result")
        notes.append(
            f"{r.get('route')} {said}: {r.get('outcome')} ({r.get('http_status') or r.get('why', '')})"
        )
    if notes:
        head += "  [" + "; ".join(notes) + "]"
    subject = str(row.get("subject") or "")
    text = " ".join(str(row.get("text") or "").split())
    shown = f"[{subject}] {text}" if subject else text
    if len(shown) > width:
        shown = shown[: width - 1] + "…"
    return f"{head}\n    {shown}"


def latest(directory: Path, count: int, db: str | None = None) -> int:
    rows = read_messages(directory)
    if not rows:
        print(f"the inbox is empty ({directory})")
        return 0
    shown = rows[-count:]
    reports = read_reports(directory)
    statuses: dict[int, str] = {}
    url = database_url(directory, db)
    if url is not None:
        try:
            statuses = outbox_statuses(url, shown)
        except Exception as exc:  # the listing is still worth having without the statuses
            print(f"(no outbox statuses: {type(exc).__name__})", file=sys.stderr)
    print(f"{len(shown)} of {len(rows)} messages in {directory}, latest last:")
    for n, row in enumerate(shown):
        print(describe(row, status=statuses.get(n), reports=reports.get(str(row.get("message_id")), [])))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.inbox", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the SMTP and webhook sinks until Ctrl-C")
    s.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--smtp-port", type=int, default=8025)
    s.add_argument("--http-port", type=int, default=8026)
    s.add_argument(
        "--api-url", help="report receipts and call results to this API (e.g. http://127.0.0.1:8000)"
    )
    s.add_argument(
        "--call-result", choices=CALL_RESULTS, default="reached", help="what every call comes to (reached)"
    )
    s.add_argument(
        "--report-delay", type=float, default=1.0, help="seconds between accepting and reporting (1)"
    )
    r = sub.add_parser("latest", help="print the latest messages")
    r.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    r.add_argument("-n", "--count", type=int, default=10)
    r.add_argument("--db", help="the database with the outbox (default: DATABASE_URL, or the stack's)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        secret = os.environ.get("WEBHOOK_SECRET", "")
        return serve(
            args.dir,
            args.smtp_port,
            args.http_port,
            secret,
            args.host,
            api_url=args.api_url,
            call_result=args.call_result,
            report_delay=max(0.0, args.report_delay),
        )
    return latest(args.dir, max(1, args.count), args.db)


if __name__ == "__main__":
    sys.exit(main())
