"""Runtime configuration: defaults, then the environment (DESIGN.md)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Client
from temporalio.envconfig import ClientConfig

from models.contract import DEFAULT_TASK_QUEUE

__all__ = ["Settings", "SettingsInvalid", "TemporalUnreachable", "connect", "get_settings", "settled"]


class Settings(BaseSettings):
    # hide_input_in_errors: a ValidationError's text never shows a secret given.
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", hide_input_in_errors=True)

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = DEFAULT_TASK_QUEUE
    database_url: str = "sqlite:///./collections.db"
    metrics_port: int | None = None  # Prometheus endpoint of the SDK runtime, off by default
    log_level: str = "INFO"
    # Outbound delivery (DESIGN.md "Talking to the world"; activities/providers.py). With
    # none set, messages are only logged (the development default).
    smtp_url: SecretStr | None = None  # smtp://user:pass@host:port, smtps://..., ?starttls=true
    mail_from: str | None = None
    sms_webhook_url: str | None = None
    voice_webhook_url: str | None = None
    # HMAC-SHA256 key of the SMS / voice providers, both directions (blank: unset; the
    # providers' webhooks are then refused at start, the API's routes answer 401).
    webhook_secret: SecretStr = SecretStr("")
    # Letters (activities/letters.py): the letterhead's name (blank: "贷款催收中心" /
    # "Loan Collections Centre"), and a folder where the letters that are not mailed are
    # written as PDF for the print house (<LETTERS_DIR>/<loan_id>/<key>.pdf; blank: only
    # logged).
    lender_name: str | None = None
    letters_dir: str | None = None
    # The inbound API (api.py, DESIGN.md contract part 3). Secrets are SecretStr: never
    # shown in a repr or a log; an empty one refuses every request it guards (401).
    payment_webhook_secret: SecretStr = SecretStr("")  # HMAC key of the payment gateway's callbacks
    api_token: SecretStr = SecretStr("")  # bearer token of GET /loans/{loan_id}
    api_max_body_bytes: int = Field(default=64 * 1024, gt=0)  # larger request bodies are refused (413)
    # Requests a minute per client address (429 with Retry-After beyond; 0: no limit), and
    # the seconds a request body may take to arrive (408 after).
    api_rate_limit: int = Field(default=6000, ge=0)
    api_body_timeout: float = Field(default=10.0, gt=0)
    # Payload encryption (DESIGN.md part 3; client/codec.py), off while the key is blank:
    # AES-256-GCM, key = base64 of 32 bytes, its id written beside each sealed payload.
    payload_encryption_key: SecretStr = SecretStr("")
    payload_encryption_key_id: str = ""
    payload_decryption_keys: SecretStr = SecretStr("")  # older keys, still read: id=base64key,...
    # The codec server of the Web UI (codec_server.py): its bearer token (blank: every
    # request refused, 401) and the UI origins allowed by CORS (comma-separated).
    codec_token: SecretStr = SecretStr("")
    codec_cors_origins: str = "http://localhost:8233"
    codec_max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)  # larger bodies are refused (413)
    # Local development only (./run --encrypt): also open, without the token, a request that
    # comes from a loopback client with an Origin among CODEC_CORS_ORIGINS that is itself on
    # loopback (the dev server's Web UI cannot send a bearer token). Never in production.
    codec_allow_ui_origin_without_token: bool = False

    @model_validator(mode="after")
    def _payload_keys_usable(self) -> Settings:
        # Imported here: client/ imports this module. Raises a ValueError naming the variable.
        from client.codec import codec_from_settings

        codec_from_settings(self)
        return self


class SettingsInvalid(SystemExit):
    """The environment's configuration cannot be used: one line naming the variable(s).
    A SystemExit, so a door (worker, CLI, API, codec server) that reads its settings at
    start stops there with exit status 1 and this line, not a traceback."""


def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            (f"{'.'.join(str(p) for p in e['loc']).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise SettingsInvalid(f"error: invalid configuration: {problems}") from None


async def settled(work: Awaitable[int]) -> int:
    """Await a door's work (worker, CLI, stack), then let the SDK's Rust threads wind
    down inside the event loop before the interpreter exits: they can race its shutdown
    and abort the process (sdk-python #300)."""
    try:
        return await work
    finally:
        gc.collect()
        await asyncio.sleep(0.2)


class TemporalUnreachable(RuntimeError):
    """The server named by the configuration does not answer."""


async def connect(settings: Settings | None = None) -> Client:
    """A client for the configured namespace: a temporal.toml profile (TLS, API key,
    Temporal Cloud) if one is set up, then TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE."""
    settings = settings or get_settings()
    # The profile (TEMPORAL_CONFIG_FILE / TEMPORAL_PROFILE, with TLS and API key) and the
    # TEMPORAL_* variables come first; our defaults fill only what they leave unset.
    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", settings.temporal_address)
    config.setdefault("namespace", settings.temporal_namespace)
    from client.codec import data_converter  # here: client/ imports this module

    try:
        return await Client.connect(**config, data_converter=data_converter(settings))
    except RuntimeError as exc:
        raise TemporalUnreachable(
            f"cannot reach the Temporal server at {config['target_host']} (TEMPORAL_ADDRESS): {exc}"
        ) from exc
