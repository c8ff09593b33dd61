"""The collector's desk in the CLI (starter.py promise, dispute, hardship, preferences,
log-contact, worklist) without a server: what the CLI refuses before sending anything
(exit 2, one line naming the option), its help, and how answers are shown."""

from __future__ import annotations

import socket
from datetime import date
from pathlib import Path
from typing import Any

import pytest

import starter
from client import DESK_MESSAGES
from domain.enums import Channel
from models.contract import (
    CONTACT_LOGGED,
    CONTACT_PREFERENCES_SET,
    DISPUTE_OPENED,
    DISPUTE_RESOLVED,
    END_HARDSHIP,
    HARDSHIP_APPROVED,
    HARDSHIP_ENDED,
    LOG_CONTACT,
    OPEN_DISPUTE,
    PROMISE_MADE,
    RECORD_PROMISE,
    RESOLVE_DISPUTE,
    SET_CONTACT_PREFERENCES,
    START_HARDSHIP,
)
from models.wire import (
    CaseView,
    ContactLogIn,
    DeskResult,
    DisputeOpenIn,
    DisputeResolveIn,
    HardshipEndIn,
    HardshipStartIn,
    PreferencesIn,
    PromiseIn,
)


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point the CLI at a port where nothing listens: proves nothing was sent. (A logged
    call reads the borrower's calls first: from an empty database of its own.)"""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("TEMPORAL_ADDRESS", address)
    return address


PROMISE = ["promise", "L-1", "--id", "PR-1", "--amount", "100", "--date", "2025-03-05", "--agent", "agent-a"]
DISPUTE = ["dispute", "open", "L-1", "--id", "D-1", "--reason", "amount", "--by", "agent-a"]
RESOLVE = ["dispute", "resolve", "L-1", "--id", "D-1", "--outcome", "upheld", "--by", "sup"]
HARDSHIP = [
    "hardship",
    "start",
    "L-1",
    "--id",
    "H-1",
    "--reason",
    "illness",
    "--until",
    "2025-05-01",
    "--approved-by",
    "sup",
    "--approval-ref",
    "APR-1",
]
HARDSHIP_END = ["hardship", "end", "L-1", "--id", "H-1", "--by", "sup"]
PREFERENCES = ["preferences", "L-1", "--id", "PF-1", "--channels", "sms,email", "--by", "agent-a"]
CONTACT = [
    "log-contact",
    "L-1",
    "--id",
    "C-1",
    "--agent",
    "agent-a",
    "--channel",
    "voice",
    "--result",
    "reached",
]


def replace(argv: list[str], option: str, value: str) -> list[str]:
    """`argv` with `option`'s value replaced."""
    out = list(argv)
    out[out.index(option) + 1] = value
    return out


def without(argv: list[str], option: str) -> list[str]:
    out = list(argv)
    i = out.index(option)
    del out[i : i + 2]
    return out


BAD_INPUT = [
    # amounts, in the currency typed (the existing amount parser)
    (replace(PROMISE, "--amount", "12,50"), "--amount", "ambiguous"),
    (replace(PROMISE, "--amount", "12.345"), "--amount", "more than 2 decimals"),
    (replace(PROMISE, "--amount", "-5"), "--amount", "is not an amount"),
    (replace(PROMISE, "--amount", "0"), "--amount", "greater than zero"),
    (replace(PROMISE, "--amount", "abc"), "--amount", "is not an amount"),
    (
        [*replace(PROMISE, "--amount", "15.5"), "--currency", "JPY"],
        "--amount",
        "more than 0 decimals for JPY",
    ),
    # dates and times
    (replace(PROMISE, "--date", "2025-02-30"), "--date", "is not a date"),
    (replace(PROMISE, "--date", "05/03/2025"), "--date", "is not a date"),
    (replace(PROMISE, "--date", "1999-12-31"), "--date", "must lie between"),
    ([*PROMISE, "--made-at", "2025-03-01T10:00"], "--made-at", "needs a UTC offset"),
    ([*PROMISE, "--made-at", "yesterday"], "--made-at", "is not an ISO 8601 time"),
    ([*DISPUTE, "--opened-at", "1700000000"], "--opened-at", "is not an ISO 8601 time"),
    (replace(HARDSHIP, "--until", "soon"), "--until", "is not a date"),
    ([*CONTACT, "--at", "2025-03-01 10:00"], "--at", "needs a UTC offset"),
    # channels, reasons, outcomes, results
    (replace(PREFERENCES, "--channels", "sms,fax"), "--channels", "'fax' is not a channel"),
    (replace(PREFERENCES, "--channels", ""), "--channels", "at least one channel"),
    (replace(PREFERENCES, "--channels", "sms,,email"), "--channels", "empty channel"),
    (replace(CONTACT, "--channel", "sms"), "--channel", "'sms' is not one of"),
    (replace(CONTACT, "--result", "maybe"), "--result", "'maybe' is not one of"),
    ([*CONTACT, "--reason", "lazy"], "--reason", "'lazy' is not one of"),
    (replace(DISPUTE, "--reason", "bored"), "--reason", "'bored' is not one of"),
    (replace(HARDSHIP, "--reason", "holiday"), "--reason", "'holiday' is not one of"),
    (replace(RESOLVE, "--outcome", "maybe"), "--outcome", "'maybe' is not one of"),
    # what the wire types refuse (models/wire.py decides), named by the option
    (replace(PROMISE, "--id", ""), "--id", "blank"),
    (replace(PROMISE, "--id", "P" * 129), "--id", "at most 128"),
    (replace(PROMISE, "--agent", "a\u202eb"), "--agent", "control or invisible"),
    (replace(DISPUTE, "--by", " "), "--by", "blank"),
    (replace(RESOLVE, "--id", ""), "--id", "blank"),
    (replace(HARDSHIP, "--approval-ref", ""), "--approval-ref", "blank"),
    (replace(HARDSHIP_END, "--by", "x" * 257), "--by", "at most 256"),
    (replace(PREFERENCES, "--id", ""), "--id", "blank"),
    (replace(CONTACT, "--agent", ""), "--agent", "blank"),
    # missing options
    (without(PROMISE, "--date"), "--date", "Missing option"),
    (without(HARDSHIP, "--approved-by"), "--approved-by", "Missing option"),
    (without(CONTACT, "--agent"), "--agent", "Missing option"),
    # the IVR's results are logged as ivr:<message id> (POST /calls): not a person's id
    (replace(CONTACT, "--id", "ivr:L-1/1/dpd-7-call"), "--id", "reserved for the IVR"),
]


@pytest.mark.parametrize(
    ("argv", "option", "message"), BAD_INPUT, ids=[f"{a[0]}-{o}-{m}" for a, o, m in BAD_INPUT]
)
def test_bad_input_exits_2_naming_the_option_and_sends_nothing(
    argv: list[str], option: str, message: str, unreachable: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = starter.main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert option in err and message in err, err
    assert "cannot reach" not in err and captured.out == ""


GOOD = [PROMISE, DISPUTE, RESOLVE, HARDSHIP, HARDSHIP_END, PREFERENCES, CONTACT]


@pytest.mark.parametrize("argv", GOOD, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize("extra", [[], ["--async"], ["--json"]], ids=["update", "async", "json"])
def test_good_input_gets_as_far_as_the_server(
    argv: list[str], extra: list[str], unreachable: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert starter.main([*argv, *extra]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the Temporal server" in err and unreachable in err and err.count("\n") == 1


def test_amounts_are_read_in_the_currency_given() -> None:
    assert starter.amount_arg("1,000", "CNY", "--amount") == 100_000
    assert starter.amount_arg("1,000", "JPY", "--amount") == 1_000


def test_channels_are_read_in_order_once_each() -> None:
    assert starter.channels_arg("email") == [Channel.EMAIL]
    assert starter.channels_arg(" SMS , email,sms ") == [Channel.SMS, Channel.EMAIL]


DESK_COMMANDS = [
    ["promise"],
    ["dispute"],
    ["dispute", "open"],
    ["dispute", "resolve"],
    ["hardship"],
    ["hardship", "start"],
    ["hardship", "end"],
    ["preferences"],
    ["log-contact"],
    ["worklist"],
]


@pytest.mark.parametrize("command", DESK_COMMANDS, ids=" ".join)
def test_every_desk_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert starter.main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.lstrip().startswith("Usage: starter.py " + " ".join(command))


def test_each_input_goes_as_its_update_or_its_signal_twin() -> None:
    assert {
        PromiseIn: (RECORD_PROMISE, PROMISE_MADE),
        DisputeOpenIn: (OPEN_DISPUTE, DISPUTE_OPENED),
        DisputeResolveIn: (RESOLVE_DISPUTE, DISPUTE_RESOLVED),
        HardshipStartIn: (START_HARDSHIP, HARDSHIP_APPROVED),
        HardshipEndIn: (END_HARDSHIP, HARDSHIP_ENDED),
        PreferencesIn: (SET_CONTACT_PREFERENCES, CONTACT_PREFERENCES_SET),
        ContactLogIn: (LOG_CONTACT, CONTACT_LOGGED),
    } == DESK_MESSAGES


ALL_CHANNELS = [c.value for c in Channel]


def result(**overrides: Any) -> DeskResult:
    data: dict[str, Any] = {
        "kind": "promise",
        "id": "PR-1",
        "status": "open",
        "duplicate": False,
        "hold": {"reason": "PROMISE", "until": "2025-03-05", "ref": "PR-1"},
        "broken_promises": 0,
        "contact_channels": ALL_CHANNELS,
    }
    data.update(overrides)
    return DeskResult.model_validate(data)


def test_an_answer_is_one_line_and_a_duplicate_says_so() -> None:
    line = starter.format_desk_result("L-1", result(), "recorded", "1,000.00 CNY by 2025-03-05")
    assert line == (
        "promise PR-1 recorded on loan L-1 (1,000.00 CNY by 2025-03-05): status open · "
        "hold PROMISE until 2025-03-05 (PR-1)"
    )
    dup = starter.format_desk_result("L-1", result(duplicate=True), "recorded", "ignored")
    assert dup.startswith("promise PR-1 was already recorded on loan L-1: nothing changed: status open")
    broken = starter.format_desk_result(
        "L-1", result(hold=None, status="broken", broken_promises=2), "recorded"
    )
    assert broken.endswith("hold - · 2 broken promises this episode")
    prefs = starter.format_desk_result(
        "L-1",
        result(kind="preferences", id="PF-1", status="set", hold=None, contact_channels=["letter", "email"]),
        "set",
    )
    assert prefs == "preferences PF-1 set on loan L-1: status set · hold - · contact only by letter, email"
    assert all("\n" not in text for text in (line, dup, broken, prefs))


def case(**overrides: Any) -> CaseView:
    data: dict[str, Any] = {
        "loan_id": "L-1",
        "stage": "AGENT",
        "days_past_due": 40,
        "outstanding": {"principal": 100_000, "interest": 0, "penalty": 0, "fee": 0, "total": 100_000},
        "overdue": 50_000,
        "next_action": None,
        "assigned_agent": "agent-a",
        "installments": [],
        "contacts_sent": 3,
        "credit_reported": False,
        "legal_referred": False,
        "closed": False,
    }
    data.update(overrides)
    return CaseView.model_validate(data)


def test_status_shows_the_protections_only_when_present() -> None:
    plain = starter.format_case_head(case(contact_channels=ALL_CHANNELS), "CNY")
    for label in ("hold", "open promise", "open disputes", "hardship", "contact only by", "broken promises"):
        assert f"  {label} " not in plain
    full = starter.format_case_head(
        case(
            hold={"reason": "DISPUTE", "until": None, "ref": "D-2"},
            promises=[
                {"promise_id": "PR-1", "amount": 120_000, "promised_date": "2025-03-05", "status": "broken"},
                {"promise_id": "PR-2", "amount": 50_000, "promised_date": "2025-03-12", "status": "open"},
            ],
            disputes=[
                {"dispute_id": "D-1", "reason": "amount", "status": "rejected", "escalated": False},
                {"dispute_id": "D-2", "reason": "fraud", "status": "open", "escalated": True},
            ],
            hardships=[{"hardship_id": "H-1", "until": date(2025, 5, 1).isoformat(), "status": "active"}],
            contact_channels=["letter", "email"],
            broken_promises=1,
        ),
        "CNY",
    )
    assert "  hold             DISPUTE (D-2)" in full
    assert "  open promise     PR-2 500.00 CNY by 2025-03-12" in full and "PR-1" not in full
    assert (
        "  open disputes    D-2 (fraud) escalated: past its response deadline" in full and "D-1" not in full
    )
    assert "  hardship         H-1 until 2025-05-01" in full
    assert "  contact only by  letter, email" in full
    assert "  broken promises  1 this episode" in full


def test_a_logged_call_over_the_borrowers_caps_on_other_loans_is_refused_and_not_sent(
    unreachable: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The workflow sees only its own loan's calls: the CLI first counts the borrower's
    calls on all loans (the call ledger) and refuses, naming at, before anything is sent."""
    from datetime import datetime, time, timedelta
    from zoneinfo import ZoneInfo

    from models import repo
    from models.db import make_engine, session_scope, upgrade_schema
    from models.tables import BorrowerCreate, Loan

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    shanghai = ZoneInfo("Asia/Shanghai")
    yesterday = datetime.now(shanghai).date() - timedelta(days=1)
    with session_scope(engine) as s:
        repo.upsert_borrower(s, BorrowerCreate(borrower_id="B-1", name="王五", phone_mobile="13800000000"))
        s.add(
            Loan(
                loan_id="L-1",
                borrower_id="B-1",
                product="credit",
                principal=100_000,
                annual_rate_bps=1_800,
                term_months=12,
                repayment_method="equal_installment",
                disbursed_on=yesterday - timedelta(days=60),
                first_due_date=yesterday - timedelta(days=30),
            )
        )
        for n in range(3):  # three connected calls yesterday morning, on the borrower's other loan
            repo.record_call(
                s,
                key=f"L-2/call-{n}",
                borrower_id="B-1",
                loan_id="L-2",
                line="mobile",
                at=datetime.combine(yesterday, time(9, 10 * n), shanghai),
                connected=True,
                source="outbox",
            )
    engine.dispose()
    at = datetime.combine(yesterday, time(15), shanghai).isoformat()
    code = starter.main([*CONTACT, "--at", at])
    err = capsys.readouterr().err
    assert code == 1, err
    assert (
        err.startswith("error: at: over the call caps across the borrower's loans")
        or "at: over the call caps across the borrower's loans" in err
    ), err
    assert "cannot reach" not in err, err  # refused before Temporal was asked
