"""write_audit: the case's audit log, one row per key."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from activities._support import as_utc, clip, insert_once, require
from models.tables import KEY_LEN, AuditLog
from models.wire import AuditEvent


def write_audit(engine: Engine, ev: AuditEvent) -> None:
    require(ev.key, "key", KEY_LEN)
    require(ev.loan_id, "loan_id")
    require(ev.event, "event")

    def work(session: Session) -> None:
        if session.exec(select(AuditLog).where(col(AuditLog.idempotency_key) == ev.key)).first():
            return
        session.add(
            AuditLog(
                idempotency_key=ev.key,
                loan_id=ev.loan_id,
                at=as_utc(ev.at),
                event=clip(ev.event, 64) or "",
                detail=ev.detail,
                source=clip(ev.source, 128) or "",
            )
        )
        session.flush()

    insert_once(engine, work)
