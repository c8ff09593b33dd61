"""Visibility queries over the search attributes of DESIGN.md (the same text works in
the Web UI's search box), and the row a listed loan becomes."""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowExecution, WorkflowExecutionStatus

from models.contract import WORKFLOW_ID_PREFIX, WORKFLOW_TYPE
from models.search import (
    AMOUNT_OVERDUE,
    ASSIGNED_AGENT,
    COLLECTION_STAGE,
    DAYS_PAST_DUE,
    LOAN_ID,
    NEXT_ACTION_AT,
    OUTSTANDING_BALANCE,
)

__all__ = ["STATUS_LABEL", "build_list_query", "case_row", "quote"]


def quote(value: str) -> str:
    """A string literal of the visibility query language."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_list_query(
    stage: str | None = None, min_dpd: int | None = None, agent: str | None = None, open_only: bool = False
) -> str:
    """A visibility query over the loans' search attributes."""
    clauses = [f"WorkflowType = {quote(WORKFLOW_TYPE)}"]
    if stage:
        clauses.append(f"{COLLECTION_STAGE.name} = {quote(stage)}")
    if min_dpd is not None:
        clauses.append(f"{DAYS_PAST_DUE.name} >= {int(min_dpd)}")
    if agent:
        clauses.append(f"{ASSIGNED_AGENT.name} = {quote(agent)}")
    if open_only:
        clauses.append('ExecutionStatus = "Running"')
    else:  # a loan that continued-as-new has one closed run per continuation: skip them
        clauses.append('ExecutionStatus != "ContinuedAsNew"')
    return " AND ".join(clauses)


STATUS_LABEL = {
    WorkflowExecutionStatus.RUNNING: "running",
    WorkflowExecutionStatus.COMPLETED: "closed",
    WorkflowExecutionStatus.FAILED: "FAILED",
    WorkflowExecutionStatus.CANCELED: "canceled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
}


def case_row(wf: WorkflowExecution) -> dict[str, Any]:
    """One listed loan (the `list --json` row): ids, stage, amounts in minor units."""
    sa = wf.typed_search_attributes
    nxt = sa.get(NEXT_ACTION_AT)
    return {
        "loan_id": sa.get(LOAN_ID) or wf.id.removeprefix(WORKFLOW_ID_PREFIX),
        "stage": sa.get(COLLECTION_STAGE) or "",
        "days_past_due": sa.get(DAYS_PAST_DUE),
        "overdue": sa.get(AMOUNT_OVERDUE),
        "outstanding": sa.get(OUTSTANDING_BALANCE),
        "agent": sa.get(ASSIGNED_AGENT),
        "next_action_at": nxt.isoformat(timespec="minutes") if nxt else None,
        "status": STATUS_LABEL.get(wf.status, str(wf.status)) if wf.status else "",
    }
