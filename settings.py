"""Runtime configuration: defaults, then the environment (DESIGN.md)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


WORKFLOW_TYPE = "LoanCollection"


def workflow_id(loan_id: str) -> str:
    return f"loan-{loan_id}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "loan-collections"
    database_url: str = "sqlite:///./collections.db"
    metrics_port: int | None = None  # Prometheus endpoint of the SDK runtime, off by default
    log_level: str = "INFO"


def get_settings() -> Settings:
    return Settings()
