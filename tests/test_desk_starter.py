"""The collector's desk end to end: each starter.py command against a real dev server
with an in-process worker (answered, duplicate, refused naming the field, --async,
--json), the client library's typed methods, and the worklist's order with real loans."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from client import connect
from models.wire import (
    ContactLogIn,
    DisputeOpenIn,
    DisputeResolveIn,
    HardshipEndIn,
    HardshipStartIn,
    PreferencesIn,
    PromiseIn,
)
from tests.test_starter import SHANGHAI, Cli, overdue_record, today
from tests.test_starter import cli as starter_cli  # noqa: F401  (a fixture)
from tests.visibility import eventually

pytestmark = pytest.mark.temporal


@pytest.fixture
def cli(starter_cli: Cli) -> Cli:  # noqa: F811  (the imported fixture, requested by name)
    """starter.py against the dev server, with a worker (tests/test_starter.py's `cli`)."""
    return starter_cli


async def started(cli: Cli, *loans: dict[str, Any], stage: str | None = None) -> None:
    code, _, err = await cli("disburse", cli.file(list(loans)))
    assert code == 0, err
    for loan in loans:
        await cli.state(loan["loan_id"], until=lambda s: stage is None or s["stage"] == stage)


def refused(loan_id: str, field: str) -> str:
    """How a refusal by the workflow begins: exit 1, one line naming the field."""
    return f"error: refused by loan {loan_id}: {field}: "


def day(n: int) -> str:
    return (today() + timedelta(days=n)).isoformat()


async def test_promise(cli: Cli) -> None:
    loan = overdue_record(10)
    loan_id = loan["loan_id"]
    await started(cli, loan, stage="EARLY")
    argv = ["promise", loan_id, "--id", "PR-1", "--amount", "1,000", "--date", day(3), "--agent", "agent-a"]

    # Refused by the workflow, naming the field: above the payoff, too far ahead.
    code, _, err = await cli(*argv[:3], "PR-2", "--amount", "99,999,999", *argv[6:])
    assert code == 1 and err.startswith(refused(loan_id, "amount")) and err.count("\n") == 1, err
    code, _, err = await cli(*argv[:3], "PR-3", "--amount", "10", "--date", day(60), *argv[8:])
    assert code == 1 and err.startswith(refused(loan_id, "promised_date")), err

    code, out, err = await cli(*argv)
    assert (code, err) == (0, ""), err
    assert out.startswith(f"promise PR-1 recorded on loan {loan_id} (1,000.00 CNY by {day(3)}): status open")
    assert f"hold PROMISE until {day(3)} (PR-1)" in out and out.count("\n") == 1

    code, out, err = await cli(*argv)
    assert code == 0 and "promise PR-1 was already recorded" in out and "nothing changed" in out, out + err

    code, out, _ = await cli(*argv, "--json")
    answer = json.loads(out)
    assert (
        code == 0 and answer["duplicate"] is True and answer["kind"] == "promise" and answer["id"] == "PR-1"
    )
    assert answer["hold"] == {"reason": "PROMISE", "until": day(3), "ref": "PR-1"}

    code, _, err = await cli(*argv[:3], "PR-4", *argv[4:])
    assert code == 1 and err.startswith(refused(loan_id, "promise_id")) and "one open promise" in err, err

    state = await cli.state(loan_id)
    assert [p["promise_id"] for p in state["promises"]] == ["PR-1"]
    code, out, _ = await cli("status", loan_id)
    assert code == 0 and "  hold             PROMISE until" in out
    assert f"  open promise     PR-1 1,000.00 CNY by {day(3)}" in out

    # --async sends the signal twin; the workflow takes it in a moment.
    other = overdue_record(8)
    await started(cli, other, stage="EARLY")
    code, out, _ = await cli(
        "promise",
        other["loan_id"],
        "--id",
        "PR-A",
        "--amount",
        "10",
        "--date",
        day(1),
        "--agent",
        "a",
        "--async",
    )
    assert code == 0 and "promise PR-A (10.00 CNY by" in out and "(signal promise_made)" in out
    await cli.state(other["loan_id"], until=lambda s: [p["promise_id"] for p in s["promises"]] == ["PR-A"])


async def test_dispute_open_resolve_and_one_past_its_deadline(cli: Cli) -> None:
    loan, late = overdue_record(12), overdue_record(40)
    loan_id = loan["loan_id"]
    await started(cli, loan, late)
    argv = ["dispute", "open", loan_id, "--id", "D-1", "--reason", "amount", "--by", "agent-a"]

    code, out, err = await cli(*argv)
    assert (code, err) == (0, ""), err
    assert out.startswith(
        f"dispute D-1 opened on loan {loan_id} (reason amount): status open · hold DISPUTE (D-1)"
    )
    code, out, _ = await cli(*argv)
    assert code == 0 and "dispute D-1 was already opened" in out
    code, out, _ = await cli("status", loan_id)
    assert "  hold             DISPUTE (D-1)" in out and "  open disputes    D-1 (amount)" in out

    resolve = ["dispute", "resolve", loan_id, "--outcome", "rejected", "--by", "sup"]
    code, _, err = await cli(*resolve, "--id", "D-NONE")
    assert code == 1 and err.startswith(refused(loan_id, "dispute_id")), err
    code, out, err = await cli(*resolve, "--id", "D-1")
    assert code == 0 and out.startswith(
        f"dispute D-1 resolved on loan {loan_id} (rejected): status rejected"
    ), out + err
    assert "hold -" in out
    code, out, _ = await cli(*resolve, "--id", "D-1", "--json")
    assert code == 0 and json.loads(out)["duplicate"] is True

    # Received 21 days ago: past the 20 response days, escalated at once, still open.
    opened_at = (datetime.now(SHANGHAI) - timedelta(days=21)).isoformat()
    late_id = late["loan_id"]
    code, out, err = await cli(
        "dispute",
        "open",
        late_id,
        "--id",
        "D-OLD",
        "--reason",
        "service",
        "--by",
        "a",
        "--opened-at",
        opened_at,
    )
    assert code == 0, err
    state = await cli.state(late_id, until=lambda s: s["disputes"] and s["disputes"][0]["escalated"])
    assert state["disputes"] == [
        {"dispute_id": "D-OLD", "reason": "service", "status": "open", "escalated": True}
    ]
    code, out, _ = await cli("status", late_id)
    assert "D-OLD (service) escalated: past its response deadline" in out

    code, out, _ = await cli(
        "dispute", "open", late_id, "--id", "D-2", "--reason", "fraud", "--by", "a", "--async"
    )
    assert code == 0 and "(signal dispute_opened)" in out
    await cli.state(late_id, until=lambda s: len(s["disputes"]) == 2)


async def test_hardship_start_and_end(cli: Cli) -> None:
    loan = overdue_record(40)
    loan_id = loan["loan_id"]
    await started(cli, loan, stage="AGENT")
    start = [
        "hardship",
        "start",
        loan_id,
        "--reason",
        "job_loss",
        "--approved-by",
        "sup",
        "--approval-ref",
        "APR-1",
    ]

    code, out, err = await cli(*start, "--id", "H-1", "--until", day(10))
    assert (code, err) == (0, ""), err
    assert out.startswith(
        f"hardship H-1 started on loan {loan_id} (job_loss, until {day(10)}): status active"
    )
    assert f"hold HARDSHIP until {day(10)} (H-1)" in out
    code, out, _ = await cli(*start, "--id", "H-1", "--until", day(10))
    assert code == 0 and "hardship H-1 was already started" in out
    code, _, err = await cli(*start, "--id", "H-2", "--until", day(400))
    assert code == 1 and err.startswith(refused(loan_id, "until")), err
    code, out, _ = await cli("status", loan_id)
    assert f"  hardship         H-1 until {day(10)}" in out

    code, _, err = await cli("hardship", "end", loan_id, "--id", "H-NONE", "--by", "sup")
    assert code == 1 and err.startswith(refused(loan_id, "hardship_id")), err
    code, out, err = await cli("hardship", "end", loan_id, "--id", "H-1", "--by", "sup")
    assert code == 0 and out.startswith(f"hardship H-1 ended on loan {loan_id}: status ended · hold -"), (
        out + err
    )
    code, out, _ = await cli("hardship", "end", loan_id, "--id", "H-1", "--by", "sup")
    assert code == 0 and "already ended" in out

    code, out, _ = await cli(*start, "--id", "H-3", "--until", day(5), "--async")
    assert code == 0 and "(signal hardship_approved)" in out
    await cli.state(loan_id, until=lambda s: (s["hold"] or {}).get("ref") == "H-3")


async def test_preferences(cli: Cli) -> None:
    loan = overdue_record(2)
    loan_id = loan["loan_id"]
    await started(cli, loan, stage="GRACE")
    argv = ["preferences", loan_id, "--id", "PF-1", "--channels", "email", "--by", "agent-a"]

    code, out, err = await cli(*argv)
    assert (code, err) == (0, ""), err
    assert out.startswith(f"preferences PF-1 set on loan {loan_id}")
    assert out.rstrip().endswith("contact only by letter, email"), out
    code, out, _ = await cli(*argv)
    assert code == 0 and "was already set" in out
    code, out, _ = await cli(*argv, "--json")
    assert json.loads(out)["contact_channels"] == ["letter", "email"]
    code, out, _ = await cli("status", loan_id)
    assert "  contact only by  letter, email" in out

    code, out, _ = await cli(
        "preferences", loan_id, "--id", "PF-2", "--channels", "sms,voice", "--by", "a", "--async"
    )
    assert code == 0 and "(signal contact_preferences_set)" in out
    await cli.state(loan_id, until=lambda s: s["contact_channels"] == ["sms", "voice", "letter"])

    await (await connect(cli.settings)).handle(loan_id).terminate("test: closed")
    code, _, err = await cli(*argv[:3], "PF-3", *argv[4:])
    assert code == 1 and "closed" in err and err.count("\n") == 1, err


async def test_log_contact(cli: Cli) -> None:
    loan = overdue_record(40)
    loan_id = loan["loan_id"]
    await started(cli, loan, stage="AGENT")
    base = ["log-contact", loan_id, "--agent", "agent-a"]

    code, out, err = await cli(
        *base, "--id", "C-1", "--channel", "inbound", "--result", "reached", "--reason", "job_loss"
    )
    assert (code, err) == (0, ""), err
    assert out.startswith(f"contact C-1 logged on loan {loan_id} (inbound, reached): status ")
    code, out, _ = await cli(*base, "--id", "C-1", "--channel", "inbound", "--result", "reached")
    assert code == 0 and "contact C-1 was already logged" in out

    # A field visit needs two collectors; an outbound call at 03:00 local is outside the window.
    code, _, err = await cli(*base, "--id", "C-2", "--channel", "field_visit", "--result", "reached")
    assert code == 1 and err.startswith(refused(loan_id, "agent_ids")), err
    night = (datetime.now(SHANGHAI) - timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
    code, _, err = await cli(
        *base, "--id", "C-3", "--channel", "voice", "--result", "no_answer", "--at", night.isoformat()
    )
    assert code == 1 and err.startswith(refused(loan_id, "at")), err

    code, out, err = await cli(
        *base,
        "--agent",
        "agent-b",
        "--id",
        "C-4",
        "--channel",
        "field_visit",
        "--result",
        "refused",
        "--at",
        night.replace(hour=10).isoformat(),  # inside the window (the test may run at night)
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["kind"] == "contact" and json.loads(out)["id"] == "C-4"
    code, out, _ = await cli(*base, "--id", "C-5", "--channel", "inbound", "--result", "reached", "--async")
    assert code == 0 and "(signal contact_logged)" in out


async def test_the_client_sends_each_desk_message_by_update_or_signal(cli: Cli) -> None:
    loan = overdue_record(40)
    loan_id = loan["loan_id"]
    await started(cli, loan, stage="AGENT")
    client = await connect(cli.settings)
    now = datetime.now(SHANGHAI)
    answers = [
        await client.record_promise(
            loan_id, PromiseIn(promise_id="P", amount=100, promised_date=today(), agent_id="a")
        ),
        await client.open_dispute(loan_id, DisputeOpenIn(dispute_id="D", reason="other", opened_by="a")),
        await client.resolve_dispute(
            loan_id, DisputeResolveIn(dispute_id="D", outcome="upheld", resolved_by="a")
        ),
        await client.start_hardship(
            loan_id,
            HardshipStartIn(
                hardship_id="H",
                reason="illness",
                until=today() + timedelta(days=3),
                approved_by="a",
                approval_ref="r",
            ),
        ),
        await client.end_hardship(loan_id, HardshipEndIn(hardship_id="H", ended_by="a")),
        await client.set_contact_preferences(
            loan_id, PreferencesIn(preference_id="F", channels=["sms"], set_by="a")
        ),
        await client.log_contact(
            loan_id,
            ContactLogIn(contact_id="C", agent_ids=["a"], channel="inbound", result="reached", at=now),
        ),
    ]
    assert [(a.kind, a.id, a.duplicate) for a in answers if a is not None] == [
        ("promise", "P", False),
        ("dispute", "D", False),
        ("dispute", "D", False),
        ("hardship", "H", False),
        ("hardship", "H", False),
        ("preferences", "F", False),
        ("contact", "C", False),
    ]
    assert answers[1] is not None and answers[1].status == "open"
    assert answers[2] is not None and answers[2].status == "upheld"
    sent = await client.open_dispute(
        loan_id, DisputeOpenIn(dispute_id="D-SIG", reason="other", opened_by="a"), fire_and_forget=True
    )
    assert sent is None
    await cli.state(loan_id, until=lambda s: any(d["dispute_id"] == "D-SIG" for d in s["disputes"]))


async def test_worklist_orders_an_agents_real_cases(cli: Cli) -> None:
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    assert (await cli("agents", "add", agent, "Worklist Agent"))[0] == 0
    # Same terms, so DPD × overdue grows with DPD.
    plain_35, plain_50, plain_45 = overdue_record(35), overdue_record(50), overdue_record(45)
    due_today, broken = overdue_record(33), overdue_record(32)
    loans = [plain_35, plain_50, plain_45, due_today, broken]
    await started(cli, *loans)
    for loan in loans:
        await cli.state(loan["loan_id"], until=lambda s: s["assigned_agent"] == agent)

    code, out, err = await cli(
        "promise", due_today["loan_id"], "--id", "PR-T", "--amount", "100", "--date", day(0), "--agent", agent
    )
    assert code == 0, err
    made_at = (datetime.now(SHANGHAI) - timedelta(days=3)).isoformat()
    code, out, err = await cli(
        "promise",
        broken["loan_id"],
        "--id",
        "PR-B",
        "--amount",
        "100",
        "--date",
        day(-1),
        "--agent",
        agent,
        "--made-at",
        made_at,
    )
    assert code == 0 and "status broken" in out and "1 broken promise this episode" in out, out + err

    expected = [due_today, broken, plain_50, plain_45, plain_35]
    want = [loan["loan_id"] for loan in expected]

    async def rows() -> list[dict[str, Any]]:
        code, out, err = await cli("worklist", "--agent", agent, "--json")
        assert code == 0, err
        found: list[dict[str, Any]] = json.loads(out)
        return found

    found = await eventually(rows, lambda r: [x["loan_id"] for x in r] == want, timeout=60)
    assert [x["loan_id"] for x in found] == want, found
    assert [x["priority"] for x in found] == [
        "promise_due_today",
        "broken_promises",
        "by_exposure",
        "by_exposure",
        "by_exposure",
    ]
    assert found[0]["why"] == "promise PR-T due today" and found[0]["hold"]["reason"] == "PROMISE"
    assert found[1]["broken_promises"] == 1 and found[1]["why"] == "1 broken promise"
    exposures = [x["days_past_due"] * x["overdue"] for x in found[2:]]
    assert exposures == sorted(exposures, reverse=True)

    code, out, err = await cli("worklist", "--agent", agent)
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    order = [next(i for i, line in enumerate(lines) if loan_id in line) for loan_id in want]
    assert order == sorted(order), out
    assert "promise PR-T due today" in out and "PROMISE until" in out and "5 open case(s)" in out

    code, out, _ = await cli("worklist", "--agent", "nobody-here")
    assert code == 0 and out.startswith("no open cases for agent nobody-here")
