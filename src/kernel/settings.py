"""One settings object for the whole service.

`DATABASE_URL`, `REDIS_URL` and `MQTT_URL` are unprefixed (the ecosystem's habit); everything else is `VNH_` with
`__` for nesting (`VNH_DATABASE_OWNER_URL`, `VNH_MQTT__SHARE_GROUP`). A URL left unset means "embedded": `vnh serve`
starts that server itself from its pip wheel and fills the URL in before anything connects.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseModel):
    app_role: str = "vnh_app"
    pool_size: int = 10
    max_overflow: int = 10
    statement_timeout_ms: int = 30_000


class AuthSettings(BaseModel):
    jwt_secret: SecretStr | None = None
    token_ttl: timedelta = timedelta(hours=8)
    session_cookie: str = "vnh_session"
    session_cookie_secure: bool = False
    # staff sessions (every role but elder and caregiver) end after this long without a request, beside the
    # absolute `token_ttl`
    idle_timeout: timedelta = timedelta(minutes=30)
    # staff passwords expire after this long: the next login may only change the password
    password_max_age: timedelta = timedelta(days=90)
    # roles that must log in with a second factor (TOTP): until enrolled, their login may only enrol
    mfa_roles: list[str] = Field(default_factory=lambda: ["admin"])
    # how often an open event stream asks whether the token that opened it still holds (logout, revocation)
    stream_recheck: timedelta = timedelta(seconds=10)


class HttpSettings(BaseModel):
    # addresses or networks (CIDR) of the reverse proxies whose `X-Forwarded-For` is believed; none by default, so
    # the per-address login limit counts the peer address
    trusted_proxies: list[str] = Field(default_factory=list)


class CryptoSettings(BaseModel):
    """Field encryption of personal data (PIPL). `keys` maps key id → base64 key; `active_key` encrypts, all keys
    decrypt, so rotation is: add a key, make it active, re-encrypt (`vnh crypto rotate`), drop the old one."""

    cipher: Literal["aes-gcm", "sm4-gcm"] = "aes-gcm"
    keys: dict[str, SecretStr] = Field(default_factory=dict)
    active_key: str | None = None
    blind_index_key: SecretStr | None = None


class AuditSettings(BaseModel):
    hmac: Literal["sha256", "sm3"] = "sha256"
    key: SecretStr | None = None
    seal_interval_s: float = 1.0
    # The chain's head is witnessed outside the database (kernel/audit_witness.py): an append-only file, by default
    # `<data_dir>/audit-witness.jsonl` (put it on storage the database's superuser cannot write), and optionally a
    # remote service that receives each head as a signed JSON POST.
    witness_file: Path | None = None
    witness_url: str | None = None
    witness_timeout_s: float = 5.0


class MqttSettings(BaseModel):
    client_id: str = "vnh-0"
    share_group: str = "vnh"
    username: str | None = None
    password: SecretStr | None = None
    # devices ingest (src/devices/gateway.py): `$share/<share_group>/...` unless the broker has no shared
    # subscriptions (the embedded amqtt broker: subscribed plainly, one instance)
    shared_subscription: bool = True
    ingest: bool = True  # run the MQTT gateway in this instance
    keepalive_s: int = 30
    protocol: Literal["3.1.1", "5"] = "3.1.1"


class DevicesSettings(BaseModel):
    """Devices and alarms (src/devices/): ingest batching, supervision, rules, escalation, commands, broker hooks."""

    batch_size: int = 500  # messages per ingest transaction (at most the broker's in-flight window)
    batch_wait_s: float = 0.02  # how long a batch waits to fill once its first message is in
    max_payload_bytes: int = 65_536
    dedup_retention: timedelta = timedelta(days=30)
    heartbeat_s: int = 300  # default supervision interval
    # silent longer than this many intervals → one device_offline alarm: 3 means two lost heartbeats in a row never
    # alarm (the third arrives at 3 intervals), three do; supervision wakes when the next device is due
    offline_after_intervals: float = Field(default=3.0, ge=1.0)
    supervision_interval_s: float = 10.0  # the longest supervision sleeps between passes
    clock_skew_max: timedelta = timedelta(hours=1)  # a device `ts` further than this from receipt is noted clock_skew
    low_battery_percent: int = 15
    escalate_after: timedelta = timedelta(seconds=60)  # unacknowledged alarms escalate (UK TSA: 60 s)
    escalation_max_level: int = 5
    escalation_extra_responders: int = 3
    command_ttl: timedelta = timedelta(hours=24)
    command_resend_after: timedelta = timedelta(minutes=2)
    eta_speed_kmh: float = 20.0  # "预计…分钟到达" in the notify command: distance at this speed
    notifier_webhook_url: str | None = None  # emergency-contact notices (an SMS/voice gateway's webhook)
    notifier_webhook_secret: SecretStr | None = None  # HMAC-SHA256 of the body in X-VNH-Signature
    notifier_timeout_s: float = 5.0
    broker_hook_secret: SecretStr | None = None  # the EMQX HTTP auth/ACL hook's bearer secret
    # Mosquitto's dynamic-security admin: revoked devices are disabled there (`disableClient`) when set
    mosquitto_admin_username: str | None = None
    mosquitto_admin_password: SecretStr | None = None


class MatchingWeights(BaseModel):
    """Score = what a match costs, lower is better (README, "Matching"). Distances in km; others in km-equivalents."""

    distance_per_km: float = 1.0
    continuity_bonus: float = 2.0  # minus this when the caregiver served the elder before
    gender_mismatch: float = 3.0  # elder prefers the other gender
    no_common_language: float = 4.0
    rating_per_star: float = 0.5  # minus this per star above 3 (plus below)
    per_visit_today: float = 0.3  # fair workload: each visit already assigned today


class DispatchSettings(BaseModel):
    radius_m: float = 10_000
    position_max_age: timedelta = timedelta(minutes=10)
    offer_timeout: timedelta = timedelta(minutes=3)
    urgent_offer_timeout: timedelta = timedelta(seconds=60)
    manual_offer_timeout: timedelta = timedelta(minutes=15)
    batch_offer_timeout: timedelta = timedelta(hours=1)
    urgent_k: int = 3
    batch_horizon: timedelta = timedelta(hours=2)
    batch_interval: timedelta = timedelta(minutes=5)
    candidate_limit: int = 200
    continuity_lookback: timedelta = timedelta(days=180)
    weights: MatchingWeights = Field(default_factory=MatchingWeights)


class VisitSettings(BaseModel):
    far_check_in_m: float = 500
    too_short_fraction: float = 0.5  # of the service's default duration
    confirm_within: timedelta = timedelta(hours=24)
    travel_speed_kmh: float = 60  # faster than this between two check-ins is impossible travel
    # one device or app installation confirming visits of this many different elders in a period is an anomaly
    shared_source_elders: int = Field(default=3, ge=2)


class PushSettings(BaseModel):
    """Mobile push to the caregiver app (dispatch/push.py) through a push provider's webhook; off when unset."""

    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None  # HMAC-SHA256 of the body in X-VNH-Signature
    timeout_s: float = 5.0
    max_attempts: int = Field(default=8, ge=1)


class OutboxSettings(BaseModel):
    poll_interval_s: float = 0.2
    batch_size: int = 500
    stream_key: str = "events"  # under the redis prefix
    stream_maxlen: int = 100_000


class TlsSettings(BaseModel):
    """Certificates for the service's TLS connections (`postgresql://…?sslmode=verify-full`, `rediss://`,
    `mqtts://`; kernel/tls.py). The CA verifies the servers (unset: the system's trust store); the certificate and
    key are a client certificate for servers that ask for one. A URL's own query (`sslrootcert=`, `ssl_ca_certs=`,
    `cafile=`) overrides these for that connection."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VNH_", env_nested_delimiter="__", extra="ignore")

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL"))
    mqtt_url: str | None = Field(default=None, validation_alias=AliasChoices("MQTT_URL"))
    database_owner_url: str | None = None

    data_dir: Path = Path(".vnh")
    timezone: str = "Asia/Shanghai"
    environment: Literal["development", "test", "production"] = "development"
    metrics_token: SecretStr | None = None
    redis_prefix: str = "vnh:"

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    crypto: CryptoSettings = Field(default_factory=CryptoSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    visits: VisitSettings = Field(default_factory=VisitSettings)
    devices: DevicesSettings = Field(default_factory=DevicesSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        ZoneInfo(value)
        return value

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def owner_url(self) -> str:
        url = self.database_owner_url or self.database_url
        if url is None:
            raise RuntimeError("no database URL: start the embedded servers or set DATABASE_URL")
        return url

    @property
    def app_url(self) -> str:
        if self.database_url is None:
            raise RuntimeError("no database URL: start the embedded servers or set DATABASE_URL")
        return self.database_url


def _b64key(nbytes: int) -> str:
    return base64.b64encode(secrets.token_bytes(nbytes)).decode()


def ensure_secrets(settings: Settings) -> Settings:
    """Fill secrets that were not configured from `DATA_DIR/secrets.json`, generating it on first use.

    Production sets every secret explicitly (deploy/); a developer's embedded default gets stable generated ones so
    encrypted data and tokens survive a restart. The file is created with mode 0600.
    """
    missing = (
        settings.auth.jwt_secret is None
        or not settings.crypto.keys
        or settings.crypto.blind_index_key is None
        or settings.audit.key is None
    )
    if not missing:
        return settings
    if settings.environment == "production":
        raise RuntimeError(
            "production needs VNH_AUTH__JWT_SECRET, VNH_CRYPTO__KEYS, VNH_CRYPTO__BLIND_INDEX_KEY and VNH_AUDIT__KEY"
        )
    path = settings.data_dir / "secrets.json"
    if path.exists():
        stored = json.loads(path.read_text())
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        stored = {
            "jwt_secret": _b64key(32),
            "crypto_keys": {"k1": _b64key(32)},
            "active_key": "k1",
            "blind_index_key": _b64key(32),
            "audit_key": _b64key(32),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh, indent=1)
    if settings.auth.jwt_secret is None:
        settings.auth.jwt_secret = SecretStr(stored["jwt_secret"])
    if not settings.crypto.keys:
        settings.crypto.keys = {k: SecretStr(v) for k, v in stored["crypto_keys"].items()}
        settings.crypto.active_key = stored["active_key"]
    if settings.crypto.blind_index_key is None:
        settings.crypto.blind_index_key = SecretStr(stored["blind_index_key"])
    if settings.audit.key is None:
        settings.audit.key = SecretStr(stored["audit_key"])
    return settings
