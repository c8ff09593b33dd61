"""Schema, migrations, engine setup and the repo functions, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel
from sqlmodel import select as sa_select

from models import repo
from models.db import (
    alembic_config,
    current_revision,
    default_database_url,
    make_engine,
    normalize_url,
    session_scope,
    upgrade_schema,
)
from models.tables import (
    Agent,
    Assignment,
    AuditLog,
    Borrower,
    BorrowerCreate,
    CaseTask,
    ContactLog,
    ContactPreference,
    Dispute,
    Hardship,
    Payment,
    PromiseToPay,
)
from tests.db_fixtures import db_url, engine, session  # noqa: F401

DESK_TABLES = {"promise_to_pay", "dispute", "hardship", "contact_preference", "contact_log", "case_task"}
EXPECTED_TABLES = {
    "agent",
    "assignment",
    "audit_log",
    "borrower",
    "charge_off",
    "contact_attempt",
    "credit_bureau_record",
    "field_visit_task",
    "installment",
    "legal_referral",
    "loan",
    "payment",
    *DESK_TABLES,
}
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


# --- migrations ----------------------------------------------------------------------


def test_upgrade_creates_schema_on_empty_db_and_is_idempotent(db_url: str) -> None:  # noqa: F811
    eng = make_engine(db_url)
    try:
        assert set(sa.inspect(eng).get_table_names()) == set()
        assert current_revision(eng) is None

        upgrade_schema(db_url)
        assert set(sa.inspect(eng).get_table_names()) >= EXPECTED_TABLES
        assert current_revision(eng) == head_revision()

        upgrade_schema(db_url)  # second run: nothing to do, no error
        assert current_revision(eng) == head_revision()

        # The migration matches tables.py exactly.
        with eng.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
            )
        assert diff == []
    finally:
        eng.dispose()


def test_upgrade_accepts_an_engine_and_downgrade_round_trips(db_url: str) -> None:  # noqa: F811
    from alembic import command

    eng = make_engine(db_url)
    try:
        upgrade_schema(eng)
        assert current_revision(eng) == head_revision()
        with eng.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(sa.inspect(eng).get_table_names()) <= {"alembic_version"}
        upgrade_schema(eng)
        assert set(sa.inspect(eng).get_table_names()) >= EXPECTED_TABLES
    finally:
        eng.dispose()


# --- engine --------------------------------------------------------------------------


def test_sqlite_engine_pragmas(tmp_path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path}/x.db")
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
    finally:
        eng.dispose()


def test_memory_sqlite_keeps_schema_across_connections() -> None:
    eng = make_engine("sqlite://")
    try:
        upgrade_schema(eng)
        with session_scope(eng) as s:
            repo.add_agent(s, "a1", "Agent One")
        with session_scope(eng) as s:
            assert [a.agent_id for a in repo.list_agents(s)] == ["a1"]
    finally:
        eng.dispose()


def test_url_normalisation_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert normalize_url("postgresql://u@h:5432/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(ValueError, match="unsupported backend"):
        make_engine("mysql://u@h/db")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert default_database_url() == "sqlite:///./collections.db"
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1/x")
    assert default_database_url() == "postgresql://postgres@127.0.0.1/x"


def test_session_scope_commits_or_rolls_back(engine) -> None:  # noqa: F811
    with session_scope(engine) as s:
        repo.add_agent(s, "a1", "Agent One")
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        repo.add_agent(s, "a2", "Agent Two")
        raise RuntimeError("boom")
    with session_scope(engine) as s:
        assert [a.agent_id for a in repo.list_agents(s)] == ["a1"]


# --- column types --------------------------------------------------------------------


def test_timestamps_are_aware_utc_and_money_is_bigint(session: Session) -> None:  # noqa: F811
    shanghai = timezone(timedelta(hours=8))
    paid_at = datetime(2025, 3, 1, 23, 30, tzinfo=shanghai)
    big = 9_000_000_000_000_000  # beyond 32 bits
    session.add(Payment(payment_id="p1", loan_id="L1", amount=big, currency="CNY", paid_at=paid_at))
    session.commit()
    session.expunge_all()
    row = session.get(Payment, 1)
    assert row is not None
    assert row.amount == big
    assert row.paid_at.tzinfo is not None and row.paid_at.utcoffset() == timedelta(0)
    assert row.paid_at == paid_at
    assert row.paid_at.hour == 15


def test_payment_id_is_unique_per_loan_in_the_database(session: Session) -> None:  # noqa: F811
    session.add(Payment(payment_id="p1", loan_id="L1", amount=1, currency="CNY", paid_at=T0))
    session.commit()
    # The workflow deduplicates payment ids per loan: another loan may book the same id.
    session.add(Payment(payment_id="p1", loan_id="L2", amount=1, currency="CNY", paid_at=T0))
    session.commit()
    session.add(Payment(payment_id="p1", loan_id="L1", amount=1, currency="CNY", paid_at=T0))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_upgrade_from_0001_keeps_payments_and_keys_them_per_loan(db_url: str) -> None:  # noqa: F811
    """A database at 0001 with payments (and other rows) upgrades to head keeping every
    row; afterwards a payment_id may be booked by a second loan, never twice by one."""
    eng = make_engine(db_url)
    try:
        upgrade_schema(eng, "0001")
        assert current_revision(eng) == "0001"
        insert = sa.text(
            "INSERT INTO payment (payment_id, loan_id, amount, currency, paid_at, channel, alloc_penalty, "
            "alloc_fee, alloc_interest, alloc_principal, booked_at) VALUES (:pid, :loan, :amount, 'CNY', "
            ":at, :channel, 0, 0, 0, :amount, :at)"
        )
        with eng.begin() as conn:
            for pid, loan, amount in [("P-1", "L1", 100), ("P-2", "L1", 250), ("P-3", "L2", 999_999_999_999)]:
                conn.execute(
                    insert, {"pid": pid, "loan": loan, "amount": amount, "at": T0, "channel": "alipay"}
                )
            conn.execute(
                sa.text(
                    "INSERT INTO audit_log (idempotency_key, loan_id, at, event, detail, source, "
                    "recorded_at) VALUES ('L1/audit/x', 'L1', :at, 'payment', 'd', 's', :at)"
                ),
                {"at": T0},
            )
            # 0001 still refuses the same id on another loan: the defect this migration fixes.
            with pytest.raises(IntegrityError), conn.begin_nested():
                conn.execute(insert, {"pid": "P-1", "loan": "L2", "amount": 1, "at": T0, "channel": None})

        upgrade_schema(eng)
        assert current_revision(eng) == head_revision()
        with Session(eng) as s:
            kept = sorted((p.payment_id, p.loan_id, p.amount, p.channel) for p in s.exec(sa_select(Payment)))
            assert kept == [
                ("P-1", "L1", 100, "alipay"),
                ("P-2", "L1", 250, "alipay"),
                ("P-3", "L2", 999_999_999_999, "alipay"),
            ]
            assert all(p.paid_at == T0 for p in s.exec(sa_select(Payment)))
            assert repo.count_rows(s, AuditLog) == 1
        with session_scope(eng) as s:
            s.add(Payment(payment_id="P-1", loan_id="L2", amount=1, currency="CNY", paid_at=T0))
        with pytest.raises(IntegrityError), session_scope(eng) as s:
            s.add(Payment(payment_id="P-2", loan_id="L1", amount=1, currency="CNY", paid_at=T0))
        names = {c["name"] for c in sa.inspect(eng).get_unique_constraints("payment")}
        assert "uq_payment_loan_id_payment_id" in names and "uq_payment_payment_id" not in names
        assert "ix_payment_payment_id" in {i["name"] for i in sa.inspect(eng).get_indexes("payment")}
    finally:
        eng.dispose()


def test_upgrade_from_0002_to_0003_and_back_keeps_the_older_tables(db_url: str) -> None:  # noqa: F811
    """0003 adds the desk tables and case_task to a database at 0002 (rows kept); its
    downgrade drops exactly those tables and leaves 0002's schema and rows."""
    from alembic import command

    eng = make_engine(db_url)
    try:
        upgrade_schema(eng, "0002")
        before = set(sa.inspect(eng).get_table_names())
        assert not before & DESK_TABLES
        with session_scope(eng) as s:
            s.add(Payment(payment_id="P-1", loan_id="L1", amount=100, currency="CNY", paid_at=T0))

        upgrade_schema(eng, "0003")
        assert current_revision(eng) == "0003"
        inspector = sa.inspect(eng)
        assert set(inspector.get_table_names()) == before | DESK_TABLES
        for table, ident in [
            ("promise_to_pay", "promise_id"),
            ("dispute", "dispute_id"),
            ("hardship", "hardship_id"),
            ("contact_preference", "preference_id"),
            ("contact_log", "contact_id"),
        ]:
            uniques = {tuple(c["column_names"]) for c in inspector.get_unique_constraints(table)}
            assert ("loan_id", ident) in uniques, (table, uniques)
        assert ("idempotency_key",) in {
            tuple(c["column_names"]) for c in inspector.get_unique_constraints("case_task")
        }
        with session_scope(eng) as s:
            s.add(_promise("L1", "P-1"))
            s.add(_task("L1:dispute_overdue:D-1", agent_id="a1"))
        with Session(eng) as s:
            assert repo.count_rows(s, Payment) == 1 and repo.count_rows(s, PromiseToPay) == 1

        with eng.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0002")
        assert current_revision(eng) == "0002"
        assert set(sa.inspect(eng).get_table_names()) == before
        with Session(eng) as s:
            assert repo.count_rows(s, Payment) == 1

        upgrade_schema(eng)  # and up again, empty
        with Session(eng) as s:
            assert repo.count_rows(s, PromiseToPay) == 0
    finally:
        eng.dispose()


def test_upgrade_from_0003_to_0004_keeps_outbox_rows_and_back(db_url: str) -> None:  # noqa: F811
    """0004 adds the provider's answer and the receipt to the outbox (nullable columns):
    rows written at 0003 keep their values; the downgrade drops only those columns."""
    from alembic import command

    new_columns = {"provider_answer", "receipt_at", "receipt_detail"}
    eng = make_engine(db_url)
    try:
        upgrade_schema(eng, "0003")
        with eng.begin() as conn:  # a row as 0003 wrote it (the model has the new columns)
            conn.execute(
                sa.text(
                    "INSERT INTO contact_attempt (idempotency_key, loan_id, borrower_id, kind, channel,"
                    " template, scheduled_at, created_at, status, dialed, connected) VALUES"
                    " ('L1:reminder:1', 'L1', 'B1', 'reminder', 'sms', 'reminder_t3', :t, :t,"
                    " 'delivered', false, false)"
                ),
                {"t": T0},
            )
        upgrade_schema(eng, "0004")
        columns = {c["name"] for c in sa.inspect(eng).get_columns("contact_attempt")}
        assert new_columns <= columns
        with Session(eng) as s:
            row = repo.contact_by_key(s, "L1:reminder:1")
            assert row is not None and row.status == "delivered" and row.provider_answer is None
        with eng.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0003")
        columns_after = {c["name"] for c in sa.inspect(eng).get_columns("contact_attempt")}
        assert columns_after == columns - new_columns
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM contact_attempt")).scalar_one() == 1
    finally:
        eng.dispose()


# --- the collector's desk ------------------------------------------------------------


def _promise(loan_id: str, promise_id: str, made_at: datetime = T0, **kw: object) -> PromiseToPay:
    data: dict[str, object] = {
        "loan_id": loan_id,
        "borrower_id": "B1",
        "promise_id": promise_id,
        "amount": 9_000_000_000_000,  # money is BIGINT
        "currency": "CNY",
        "promised_date": date(2025, 3, 8),
        "agent_id": "a1",
        "status": "open",
        "made_at": made_at,
        **kw,
    }
    return PromiseToPay.model_validate(data)


def _task(key: str, agent_id: str | None = None, at: datetime = T0, loan_id: str = "L1") -> CaseTask:
    return CaseTask(
        idempotency_key=key,
        loan_id=loan_id,
        borrower_id="B1",
        kind="dispute_overdue",
        agent_id=agent_id,
        at=at,
        days_past_due=40,
        overdue=1_000,
    )


def test_desk_ids_are_unique_per_loan_in_the_database(session: Session) -> None:  # noqa: F811
    session.add(_promise("L1", "P-1"))
    session.add(_promise("L2", "P-1"))  # another loan may use the same id
    session.commit()
    session.add(_promise("L1", "P-1"))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    for row in (
        Dispute(
            loan_id="L1",
            borrower_id="B1",
            dispute_id="D-1",
            reason="amount",
            opened_by="a1",
            opened_at=T0,
            status="open",
        ),
        Hardship(
            loan_id="L1",
            borrower_id="B1",
            hardship_id="H-1",
            reason="illness",
            starts_on=date(2025, 3, 1),
            until=date(2025, 4, 1),
            approved_by="s1",
            approval_ref="R1",
            approved_at=T0,
            status="active",
        ),
        ContactPreference(
            loan_id="L1", borrower_id="B1", preference_id="C-1", channels=["sms"], set_by="a1", at=T0
        ),
        ContactLog(
            loan_id="L1",
            borrower_id="B1",
            contact_id="K-1",
            agent_ids=["a1"],
            channel="voice",
            result="reached",
            at=T0,
        ),
    ):
        session.add(row)
        session.commit()
        session.add(type(row).model_validate(row.model_dump(exclude={"id"})))
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
    session.add(_task("k1"))
    session.commit()
    session.add(_task("k1", agent_id="a1"))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_desk_columns_round_trip(session: Session) -> None:  # noqa: F811
    shanghai = timezone(timedelta(hours=8))
    session.add(_promise("L1", "P-1", made_at=datetime(2025, 3, 1, 23, 30, tzinfo=shanghai)))
    session.add(
        ContactPreference(
            loan_id="L1",
            borrower_id="B1",
            preference_id="C-1",
            channels=["email", "letter"],
            set_by="a1",
            at=T0,
        )
    )
    session.add(
        ContactLog(
            loan_id="L1",
            borrower_id="B1",
            contact_id="K-1",
            agent_ids=["a1", "a2"],
            channel="field_visit",
            result="reached",
            at=T0,
        )
    )
    session.commit()
    session.expunge_all()
    got = repo.desk_records(session, "L1")
    p = got.promises[0]
    assert p.amount == 9_000_000_000_000
    assert p.made_at.utcoffset() == timedelta(0) and p.made_at.hour == 15
    assert p.promised_date == date(2025, 3, 8)
    assert p.created_at.tzinfo is not None and p.updated_at.tzinfo is not None
    assert got.preferences[0].channels == ["email", "letter"]
    assert got.contacts[0].agent_ids == ["a1", "a2"]
    assert (got.disputes, got.hardships) == ([], [])
    assert repo.desk_records(session, "L2").promises == []
    with pytest.raises(ValueError, match="loan_id"):
        repo.desk_records(session, " ")


def test_desk_records_come_in_the_order_they_happened(session: Session) -> None:  # noqa: F811
    session.add(_promise("L1", "P-late", made_at=T0 + timedelta(days=3)))
    session.add(_promise("L1", "P-early", made_at=T0))
    session.add(_promise("L2", "P-other"))
    session.commit()
    assert [p.promise_id for p in repo.desk_records(session, "L1").promises] == ["P-early", "P-late"]


def test_open_case_tasks_by_agent_queue_or_all(session: Session) -> None:  # noqa: F811
    session.add(_task("k3", agent_id="a1", at=T0 + timedelta(hours=2)))
    session.add(_task("k1", agent_id="a1", at=T0))
    session.add(_task("k2", agent_id=None, at=T0 + timedelta(hours=1)))
    done = _task("k4", agent_id="a1")
    done.status = "done"
    session.add(done)
    session.commit()
    assert [t.idempotency_key for t in repo.open_case_tasks(session, "a1")] == ["k1", "k3"]
    assert [t.idempotency_key for t in repo.open_case_tasks(session, unassigned=True)] == ["k2"]
    assert [t.idempotency_key for t in repo.open_case_tasks(session)] == ["k1", "k2", "k3"]
    assert repo.open_case_tasks(session, "nobody") == []
    with pytest.raises(ValueError, match="agent_id"):
        repo.open_case_tasks(session, "a1", unassigned=True)
    with pytest.raises(ValueError, match="agent_id"):
        repo.open_case_tasks(session, " ")


def test_one_open_assignment_per_loan_in_the_database(session: Session) -> None:  # noqa: F811
    session.add(Assignment(idempotency_key="k1", loan_id="L1", requested_at=T0))
    session.commit()
    session.add(Assignment(idempotency_key="k2", loan_id="L1", requested_at=T0))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    row = session.get(Assignment, 1)
    assert row is not None
    row.released_at = T0
    session.add(row)
    session.add(Assignment(idempotency_key="k2", loan_id="L1", requested_at=T0))
    session.commit()  # a released row no longer counts


# --- borrowers -----------------------------------------------------------------------


def test_upsert_and_get_borrower(session: Session) -> None:  # noqa: F811
    b = BorrowerCreate(borrower_id="B1", name="王小明", phone_mobile="13812345678")
    repo.upsert_borrower(session, b)
    session.commit()
    got = repo.get_borrower(session, "B1")
    assert got is not None
    assert (got.name, got.phone_mobile, got.preferred_language) == ("王小明", "13812345678", "zh-CN")
    assert got.timezone == "Asia/Shanghai"

    repo.upsert_borrower(
        session,
        BorrowerCreate(borrower_id="B1", name="王小明", phone_mobile="13900000000", preferred_language="en"),
    )
    session.commit()
    assert repo.count_rows(session, Borrower) == 1
    got = repo.get_borrower(session, "B1")
    assert got is not None and got.phone_mobile == "13900000000" and got.preferred_language == "en"
    assert repo.get_borrower(session, "nobody") is None


def test_borrower_bad_input_names_the_field(session: Session) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="borrower_id"):
        repo.upsert_borrower(session, BorrowerCreate.model_construct(borrower_id=" ", name="x"))
    with pytest.raises(ValueError, match="preferred_language"):
        BorrowerCreate(borrower_id="B1", name="x", preferred_language="fr")
    with pytest.raises(ValueError, match="name"):
        repo.upsert_borrower(session, BorrowerCreate(borrower_id="B1", name=""))
    with pytest.raises(ValueError, match="borrower_id"):
        repo.get_borrower(session, "")


# --- agents --------------------------------------------------------------------------


def _queue(s: Session, loan_id: str, at: datetime) -> Assignment:
    row = Assignment(idempotency_key=f"assign:{loan_id}", loan_id=loan_id, requested_at=at)
    s.add(row)
    s.flush()
    return row


def test_add_list_deactivate_agents(session: Session) -> None:  # noqa: F811
    repo.add_agent(session, "b", "Bea")
    repo.add_agent(session, "a", "Ann", max_cases=10)
    session.commit()
    assert [(a.agent_id, a.name, a.active, a.max_cases) for a in repo.list_agents(session)] == [
        ("a", "Ann", True, 10),
        ("b", "Bea", True, None),
    ]
    repo.deactivate_agent(session, "a")
    session.commit()
    assert [a.agent_id for a in repo.list_agents(session, active_only=True)] == ["b"]
    # adding again reactivates
    repo.add_agent(session, "a", "Ann")
    session.commit()
    assert [a.agent_id for a in repo.list_agents(session, active_only=True)] == ["a", "b"]


def test_agent_bad_input_names_the_field(session: Session) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="agent_id"):
        repo.add_agent(session, "", "Ann")
    with pytest.raises(ValueError, match="name"):
        repo.add_agent(session, "a", " ")
    with pytest.raises(ValueError, match="max_cases"):
        repo.add_agent(session, "a", "Ann", max_cases=0)
    with pytest.raises(ValueError, match="agent_id"):
        repo.deactivate_agent(session, "ghost")
    with pytest.raises(ValueError, match="agent_id"):
        repo.deactivate_agent(session, "")


def test_least_loaded_active_agent(session: Session) -> None:  # noqa: F811
    assert repo.least_loaded_active_agent(session) is None
    repo.add_agent(session, "b", "Bea")
    repo.add_agent(session, "a", "Ann")
    repo.add_agent(session, "c", "Cai", max_cases=1)
    got = repo.least_loaded_active_agent(session)
    assert got is not None and got.agent_id == "a"  # tie -> smallest id
    for i, agent in enumerate(["a", "a", "b", "c"]):
        session.add(Assignment(idempotency_key=f"k{i}", loan_id=f"L{i}", agent_id=agent, requested_at=T0))
    session.flush()
    # a=2, b=1, c=1 but c is at max_cases
    got = repo.least_loaded_active_agent(session)
    assert got is not None and got.agent_id == "b"
    assert repo.agent_loads(session) == {"a": 2, "b": 1, "c": 1}
    repo.deactivate_agent(session, "b")
    # b's case went to the least loaded eligible agent: a (2) vs c (full) -> a
    assert repo.agent_loads(session) == {"a": 3, "b": 0, "c": 1}


def test_queued_cases_are_picked_up_when_an_agent_is_added(session: Session) -> None:  # noqa: F811
    _queue(session, "L2", T0 + timedelta(hours=1))
    _queue(session, "L1", T0)
    _queue(session, "L3", T0 + timedelta(hours=2))
    session.commit()
    assert [r.loan_id for r in repo.queued_assignments(session)] == ["L1", "L2", "L3"]

    repo.add_agent(session, "a", "Ann", max_cases=2)  # takes the two oldest
    session.commit()
    assert [r.loan_id for r in repo.queued_assignments(session)] == ["L3"]
    open1 = repo.open_assignment(session, "L1")
    assert open1 is not None and open1.agent_id == "a" and open1.assigned_at is not None

    repo.add_agent(session, "b", "Bea")
    session.commit()
    assert repo.queued_assignments(session) == []
    open3 = repo.open_assignment(session, "L3")
    assert open3 is not None and open3.agent_id == "b"


def test_deactivating_the_only_agent_requeues_its_cases(session: Session) -> None:  # noqa: F811
    repo.add_agent(session, "a", "Ann")
    session.add(Assignment(idempotency_key="k1", loan_id="L1", agent_id="a", requested_at=T0))
    session.commit()
    repo.deactivate_agent(session, "a")
    session.commit()
    rows = repo.assignments_for_loan(session, "L1")
    assert [(r.agent_id, r.release_reason) for r in rows] == [("a", "agent_deactivated"), (None, None)]
    assert [r.loan_id for r in repo.queued_assignments(session)] == ["L1"]
    repo.add_agent(session, "b", "Bea")
    session.commit()
    current = repo.open_assignment(session, "L1")
    assert current is not None and current.agent_id == "b"


def test_agent_foreign_key_is_enforced(session: Session) -> None:  # noqa: F811
    session.add(Assignment(idempotency_key="k1", loan_id="L1", agent_id="ghost", requested_at=T0))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    assert session.get(Agent, "ghost") is None
