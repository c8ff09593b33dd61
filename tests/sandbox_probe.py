"""A workflow that imports SQLModel inside the sandbox: the control case of
tests/test_workflow_sandbox.py, showing that its guard catches such an import. Only the
standard library and temporalio at module level: the sandbox re-imports this module."""

from temporalio import workflow


@workflow.defn(name="SandboxProbe")
class ImportsSqlmodel:
    @workflow.run
    async def run(self) -> str:
        import sqlmodel  # the mistake the guard is for

        return sqlmodel.__name__
