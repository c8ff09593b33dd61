"""The local inbox (scripts/inbox.py) reports back like a real provider: a signed
delivery receipt for every SMS and a call result (then a receipt) for every voice call,
after answering the webhook, retried while the API is away. Against a stand-in API: the
whole path through api.py and the workflow is the stack test's (tests/test_starter.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.providers import sign

SCRIPTS = str(Path(__file__).resolve().parent.parent / "scripts")
if SCRIPTS not in sys.path:  # imported as scripts/stack.py does (scripts/ is no package)
    sys.path.insert(0, SCRIPTS)

from inbox import Inbox, Reporter, latest, make_handler, read_reports  # noqa: E402

SECRET = "s3cret-for-tests"
PHONE = "+8613800000016"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FakeApi:
    """Records each POST (path, parsed body, whether its X-Signature is right) and
    answers with the next queued status for its path (200 when none is queued)."""

    port: int
    answers: dict[str, list[int]] = field(default_factory=dict)
    received: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)
    slow: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, dict[str, Any], bool]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(free_port())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            signed = self.headers.get("X-Signature") == f"sha256={digest}"
            fake.received.append((self.path, json.loads(body), signed))
            time.sleep(fake.slow)
            queued = fake.answers.get(self.path) or []
            code = queued.pop(0) if queued else 200
            data = json.dumps({"detail": "x", "problem": "unknown_message"} if code == 404 else {}).encode()
            self.send_response(code)
            if code == 503:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", fake.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@dataclass
class Sink:
    url: str
    inbox: Inbox
    reporter: Reporter


def start_sink(tmp_path: Path, api_url: str, **kwargs: Any) -> Iterator[Sink]:
    inbox = Inbox(tmp_path / "inbox")
    reporter = Reporter(inbox, api_url, SECRET, delay=0.0, backoff=0.05, max_backoff=0.2, **kwargs)
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), make_handler(inbox, SECRET, reporter))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Sink(f"http://127.0.0.1:{server.server_address[1]}", inbox, reporter)
    server.shutdown()
    server.server_close()
    reporter.close()


@pytest.fixture
def sink(tmp_path: Path, api: FakeApi) -> Iterator[Sink]:
    yield from start_sink(tmp_path, api.url)


def reports_of(sink: Sink, message_id: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The reports written down for `message_id`, once there are `count` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        found = read_reports(sink.inbox.dir).get(message_id, [])
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def deliver(sink: Sink, channel: str, message_id: str, key: str | None = None) -> httpx.Response:
    body = json.dumps(
        {"message_id": message_id, "channel": channel, "to": PHONE, "text": "hello", "loan_id": "L-1"}
    ).encode()
    headers = {"X-Signature": sign(body, SECRET), "Idempotency-Key": key or message_id}
    return httpx.post(f"{sink.url}/{channel}", content=body, headers=headers, timeout=5)


def test_an_sms_is_receipted_delivered_once_signed(sink: Sink, api: FakeApi) -> None:
    assert deliver(sink, "sms", "L-1/1/dpd-1-sms/x").status_code == 200
    (got,) = api.wait_for(1)
    assert got == (
        "/receipts",
        {"message_id": "L-1/1/dpd-1-sms/x", "status": "delivered", "detail": "local inbox: delivered"},
        True,
    )
    # The provider's retry of the same message (same Idempotency-Key) is not receipted again.
    again = deliver(sink, "sms", "L-1/1/dpd-1-sms/x")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    time.sleep(0.3)  # a second receipt would have come by now
    assert len(api.received) == 1
    (report,) = reports_of(sink, "L-1/1/dpd-1-sms/x")
    assert report["route"] == "/receipts" and report["http_status"] == 200 and report["outcome"] == "ok"


def test_a_call_gets_its_result_then_a_receipt(sink: Sink, api: FakeApi) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    assert deliver(sink, "voice", "L-1/-/dpd-7-call/x").status_code == 200
    calls, receipt = api.wait_for(2)
    assert calls[0] == "/calls" and calls[2] is True
    assert calls[1]["message_id"] == "L-1/-/dpd-7-call/x" and calls[1]["result"] == "reached"
    at = datetime.fromisoformat(calls[1]["at"])
    assert at.utcoffset() is not None and before <= at <= datetime.now(UTC)
    assert receipt == (
        "/receipts",
        {"message_id": "L-1/-/dpd-7-call/x", "status": "delivered", "detail": "call: reached"},
        True,
    )


def test_an_unanswered_call_is_receipted_failed(tmp_path: Path, api: FakeApi) -> None:
    for sink in start_sink(tmp_path, api.url, call_result="no_answer"):
        deliver(sink, "voice", "L-1/-/dpd-14-call/x")
        calls, receipt = api.wait_for(2)
        assert calls[1]["result"] == "no_answer"
        assert receipt[1] == {
            "message_id": "L-1/-/dpd-14-call/x",
            "status": "failed",
            "detail": "call: no_answer",
        }


def test_reports_are_retried_while_the_api_is_away_and_never_delay_the_answer(
    sink: Sink, api: FakeApi
) -> None:
    api.answers["/receipts"] = [503, 502]
    api.slow = 0.5
    started = time.monotonic()
    assert deliver(sink, "sms", "L-1/1/t-1/x").status_code == 200
    assert time.monotonic() - started < 0.4  # answered before the API was even asked
    got = api.wait_for(3)
    assert [path for path, _, _ in got] == ["/receipts"] * 3
    (report,) = reports_of(sink, "L-1/1/t-1/x")
    assert report["outcome"] == "ok" and report["attempts"] == 3


def test_a_refused_report_is_not_retried_and_logged_without_personal_data(
    sink: Sink, api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.answers["/receipts"] = [404]
    deliver(sink, "sms", "L-1/1/t-3/x")
    (report,) = reports_of(sink, "L-1/1/t-3/x")
    assert len(api.received) == 1
    assert report["outcome"] == "refused" and report["http_status"] == 404
    err = capsys.readouterr().err
    assert "report /receipts id=L-1/1/t-3/x: refused 404 (unknown_message)" in err
    assert PHONE not in err and "hello" not in err


def test_the_api_never_up_gives_up_after_a_few_tries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for sink in start_sink(tmp_path, f"http://127.0.0.1:{free_port()}", attempts=3):
        deliver(sink, "sms", "L-1/1/due/x")
        (report,) = reports_of(sink, "L-1/1/due/x")
        assert report["outcome"] == "gave up" and report["attempts"] == 3 and report["http_status"] is None
    assert "gave up after 3 attempts (ConnectError)" in capsys.readouterr().err


def test_latest_shows_what_was_reported(sink: Sink, api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    deliver(sink, "sms", "L-1/1/dpd-3-sms/x")
    reports_of(sink, "L-1/1/dpd-3-sms/x")
    capsys.readouterr()
    assert latest(sink.inbox.dir, 5, db=None) == 0
    out = capsys.readouterr().out
    assert "L-1" in out and "/receipts delivered: ok (200)" in out and PHONE not in out
