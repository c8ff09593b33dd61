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

    python -m scripts.inbox serve --dir .state/inbox --smtp-port 8025 --http-port 8026
    python -m scripts.inbox latest [-n 10] [--dir .state/inbox]    # the latest messages

`serve` reads WEBHOOK_SECRET from the environment (never from the command line, which
other users can see) and runs until SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import hmac
import json
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python scripts/inbox.py` from anywhere
    sys.path.insert(0, str(ROOT))

from activities.delivery import mask_address  # noqa: E402
from activities.providers import sign  # noqa: E402

DEFAULT_DIR = ROOT / ".state" / "inbox"
FILES = {"mail": "mail.jsonl", "sms": "sms.jsonl", "voice": "voice.jsonl"}
WEBHOOK_CHANNELS = {"/sms": "sms", "/voice": "voice"}
MAX_BODY = 64 * 1024
TEXT_MAX = 4000  # characters of a message's text kept


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


# --- webhooks ------------------------------------------------------------------------


def make_handler(inbox: Inbox, secret: str) -> type[BaseHTTPRequestHandler]:
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

    return WebhookHandler


# --- the whole -----------------------------------------------------------------------


def serve(directory: Path, smtp_port: int, http_port: int, secret: str, host: str = "127.0.0.1") -> int:
    from aiosmtpd.controller import Controller  # a dev dependency: imported when serving

    if not secret:
        print("error: WEBHOOK_SECRET is not set: the webhook sink cannot verify signatures", file=sys.stderr)
        return 2
    inbox = Inbox(directory)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    smtp = Controller(MailHandler(inbox), hostname=host, port=smtp_port)
    smtp.start()
    http = ThreadingHTTPServer((host, http_port), make_handler(inbox, secret))
    http.daemon_threads = True
    thread = threading.Thread(target=http.serve_forever, name="webhook-sink", daemon=True)
    thread.start()
    print(
        f"{now_iso()} inbox: SMTP on {host}:{smtp_port}, webhooks on http://{host}:{http_port}/sms "
        f"and /voice, stored under {directory}",
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
    print(f"{now_iso()} inbox: stopped", file=sys.stderr, flush=True)
    return 0


def describe(row: dict[str, Any], width: int = 100) -> str:
    when = str(row.get("received_at", ""))[:19].replace("T", " ")
    channel = str(row.get("channel", "?"))
    to = row.get("to")
    to_text = ", ".join(to) if isinstance(to, list) else str(to or "")
    loan = str(row.get("loan_id") or "")
    head = f"{when}  {channel:<6} {to_text:<22} {loan}"
    subject = str(row.get("subject") or "")
    text = " ".join(str(row.get("text") or "").split())
    shown = f"[{subject}] {text}" if subject else text
    if len(shown) > width:
        shown = shown[: width - 1] + "…"
    return f"{head}\n    {shown}"


def latest(directory: Path, count: int) -> int:
    rows = read_messages(directory)
    if not rows:
        print(f"the inbox is empty ({directory})")
        return 0
    shown = rows[-count:]
    print(f"{len(shown)} of {len(rows)} messages in {directory}, latest last:")
    for row in shown:
        print(describe(row))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="python -m scripts.inbox", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the SMTP and webhook sinks until Ctrl-C")
    s.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--smtp-port", type=int, default=8025)
    s.add_argument("--http-port", type=int, default=8026)
    r = sub.add_parser("latest", help="print the latest messages")
    r.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    r.add_argument("-n", "--count", type=int, default=10)
    args = parser.parse_args(argv)
    if args.command == "serve":
        secret = os.environ.get("WEBHOOK_SECRET", "")
        return serve(args.dir, args.smtp_port, args.http_port, secret, args.host)
    return latest(args.dir, max(1, args.count))


if __name__ == "__main__":
    sys.exit(main())
