"""The node's configuration: pydantic models of ``config/node.yaml``.

Validated at start: a bad file stops the node with a message that names the field and says what to fix.
Any field can be overridden from the environment with the ``LAUREL_`` prefix and ``__`` between levels,
e.g. ``LAUREL_NODE__PORT=11113`` or ``LAUREL_API__PORT=8081``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dicom_node.core.errors import ConfigError

# PS3.5 AE: default character repertoire without backslash and control characters, at most 16 characters,
# leading and trailing spaces not significant, not all spaces.
_AE_ALLOWED = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def validate_ae_title(value: str) -> str:
    """Return the AE title stripped of insignificant spaces, or raise ``ValueError`` saying what is wrong."""
    if not isinstance(value, str):
        raise ValueError("an AE title must be a string")
    stripped = value.strip(" ")
    if not stripped:
        raise ValueError("an AE title must not be empty or all spaces")
    if len(stripped) > 16:
        raise ValueError(f"AE title {stripped!r} has {len(stripped)} characters; DICOM allows at most 16")
    if not _AE_ALLOWED.match(stripped):
        raise ValueError(
            f"AE title {stripped!r} contains a backslash or a control character; "
            "use letters, digits, spaces and printable punctuation only"
        )
    return stripped


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSection(_Strict):
    """The node's own DICOM identity and where it keeps things."""

    ae_title: str = "LAUREL"
    host: str = "0.0.0.0"
    port: int = Field(11112, ge=1, le=65535)
    storage_dir: Path = Path("var/node")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the index; default: SQLite (WAL) in storage_dir/laurel.db"
    )
    database_busy_seconds: float = Field(
        30.0, gt=0, le=600, description="how long a SQLite write waits for another process's lock before failing"
    )
    settle_seconds: float = Field(10.0, gt=0, le=3600)
    completion_scan_seconds: float = Field(1.0, gt=0, le=60)
    max_associations: int = Field(
        32, ge=1, le=256, description="associations at once; size it for the PACS's fan-out (it may not retry)"
    )
    max_pdu: int = Field(262_144, ge=0, description="maximum PDU size we receive; 0 = unlimited")
    network_timeout: float = Field(
        30.0, gt=0, description="seconds without progress after which an association is aborted"
    )
    max_inflated_size: int = Field(
        1 << 30,
        ge=1 << 20,
        description="largest Deflated Explicit VR Little Endian dataset once inflated (bytes); also at most "
        "64 times what was received when that is above 64 MiB",
    )

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return validate_ae_title(v)

    def engine(self, *, create: bool = True) -> Any:
        """An engine on the index (``create``: schema created or migrated), with this node's busy timeout."""
        from dicom_node.core.engine import make_engine

        return make_engine(self.db_url, create=create, busy_seconds=self.database_busy_seconds)

    @property
    def db_url(self) -> str:
        """The index database URL (SQLite in the storage folder unless configured)."""
        return self.database_url or f"sqlite:///{(self.storage_dir / 'laurel.db').as_posix()}"


class Peer(_Strict):
    """A DICOM application we talk to: a PACS that sends us studies and/or receives our results."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    send_to_us: bool = True
    receive_results: bool = False
    type: Literal["dimse"] = "dimse"
    tls: bool = Field(False, description="write-back over DICOM TLS (the `tls` section's certificate and CAs)")
    tls_server_name: str | None = Field(None, description="the name the peer's certificate must carry (default: host)")

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return validate_ae_title(v)


class DicomwebPeer(_Strict):
    """A DICOMweb server that receives our results with STOW-RS (``type: dicomweb``); it never sends to us.

    Credentials come from the environment (``token_env``, ``password_env``) or the file (``token``,
    ``password``); they are never logged or shown.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    type: Literal["dicomweb"]
    url: str = Field(description="the DICOMweb base URL, e.g. https://pacs.example.org/dicom-web")
    receive_results: bool = True
    auth: Literal["none", "bearer", "basic"] = "none"
    token: SecretStr | None = None
    token_env: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None
    ca_certificates: Path | None = Field(None, description="CAs for an https URL (default: the system's)")
    timeout_seconds: float = Field(30.0, gt=0, le=3600)

    @property
    def send_to_us(self) -> bool:
        """A DICOMweb peer never opens associations to the node."""
        return False

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an http(s) URL; write e.g. https://pacs.example.org/dicom-web")
        if parts.username or parts.password:
            raise ValueError("put credentials in auth/token_env/password_env, not in the URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _credentials(self) -> DicomwebPeer:
        if self.auth == "bearer" and not (self.token or self.token_env):
            raise ValueError(f"peer {self.name}: auth bearer needs token_env (or token)")
        if self.auth == "basic" and not (self.username and (self.password or self.password_env)):
            raise ValueError(f"peer {self.name}: auth basic needs username and password_env (or password)")
        return self


def _peer_type(value: Any) -> str:
    found = value.get("type", "dimse") if isinstance(value, dict) else getattr(value, "type", "dimse")
    return str(found)


#: A configured peer: DIMSE (``type: dimse``, the default) or DICOMweb (``type: dicomweb``).
PEER_TAGS = ("dimse", "dicomweb")


def error_location(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """A validation error's location as a sysadmin writes it: ``peers.1.port`` (pydantic's union tag, as in
    ``peers.1.dimse.port``, left out)."""
    parts = [str(p) for i, p in enumerate(loc) if not (p in PEER_TAGS and i > 0 and isinstance(loc[i - 1], int))]
    return ".".join(parts) or "(top level)"


AnyPeer = Annotated[Annotated[Peer, Tag("dimse")] | Annotated[DicomwebPeer, Tag("dicomweb")], Discriminator(_peer_type)]


class TlsSection(_Strict):
    """DICOM TLS (PS3.15 Annex B secure transport): the node's certificate, the CAs it trusts, a TLS port.

    The certificate and key serve the TLS listener and are presented to TLS peers at write-back; a peer's
    certificate must be signed by one of ``ca_certificates``.
    """

    certificate: Path = Field(description="the node's certificate (PEM; may hold the chain)")
    private_key: Path = Field(description="its private key (PEM, unencrypted; readable by the node only)")
    ca_certificates: Path = Field(description="CAs (PEM) that sign the certificates of trusted peers")
    port: int | None = Field(
        2762, ge=1, le=65535, description="TLS listener (2762: the DICOM TLS port); null: TLS write-back only"
    )
    require_client_certificate: bool = Field(
        True, description="a sender must present a certificate signed by ca_certificates"
    )
    plain_port: bool = Field(True, description="also listen on node.port without TLS; false: the TLS port only")

    @field_validator("certificate", "private_key", "ca_certificates")
    @classmethod
    def _exists(cls, v: Path) -> Path:
        if not v.is_file():
            raise ValueError(f"{v} is not a readable file")
        return v

    @model_validator(mode="after")
    def _some_listener(self) -> TlsSection:
        if self.port is None and not self.plain_port:
            raise ValueError("with plain_port false, set tls.port: the node would not listen at all")
        return self


class RoutingRule(_Strict):
    """First match wins: the called AE title and/or regexes on DICOM attributes choose the model."""

    model: str
    called_ae: str | None = None
    match: dict[str, str] = Field(default_factory=dict, description="DICOM keyword -> regular expression")

    @field_validator("called_ae")
    @classmethod
    def _ae(cls, v: str | None) -> str | None:
        return None if v is None else validate_ae_title(v)

    @field_validator("match")
    @classmethod
    def _regexes(cls, v: dict[str, str]) -> dict[str, str]:
        from pydicom.datadict import tag_for_keyword

        for keyword, pattern in v.items():
            if tag_for_keyword(keyword) is None:
                raise ValueError(f"{keyword!r} is not a DICOM keyword (e.g. Modality, SeriesDescription)")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"routing regex for {keyword} is invalid: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _something_to_match(self) -> RoutingRule:
        if self.called_ae is None and not self.match:
            raise ValueError(f"routing rule for model {self.model!r} needs called_ae or match")
        return self


class ApiSection(_Strict):
    """The node's HTTP API (review queue) served by ``laurel serve``."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)


class FederationSection(_Strict):
    """Where learned weights go and new shared versions come from; absent = no federation."""

    url: str
    api_key_env: str = "LAUREL_FEDERATION_KEY"
    server_public_key: str | None = Field(
        None, description="the federation server's Ed25519 public key (base64 raw or a PEM file path)"
    )
    sync_interval_seconds: float = Field(3600.0, gt=0)
    timeout_seconds: float = Field(30.0, gt=0)
    ca_file: Path | None = Field(
        None, description="PEM bundle of the CA(s) that signed the server's certificate; default: the system's"
    )
    allow_insecure_http: bool = Field(
        False, description="allow a plain http:// URL to a host other than loopback (test labs only)"
    )


class RetentionSection(_Strict):
    """Received images are deleted this long after their study is finished; nothing else deletes them."""

    finished_study_days: float = Field(30.0, ge=0)
    unrouted_days: float = Field(30.0, ge=0)
    scan_interval_seconds: float = Field(3600.0, gt=0)


class JobsSection(_Strict):
    """The persistent job queue: retries with exponential backoff and jitter, then dead letters."""

    workers: int = Field(
        2,
        ge=1,
        le=32,
        description="worker processes of `laurel serve` / `laurel worker` (threads in the embedded one-process node)",
    )
    threads_per_worker: int = Field(1, ge=1, le=8, description="job threads in each worker process")
    worker_nice: int = Field(
        10, ge=0, le=19, description="how much lower the workers' CPU priority is than the intake's (nice)"
    )
    stop_grace_seconds: float = Field(
        10.0, gt=0, le=600, description="at SIGTERM, how long a running job may finish before its worker is killed"
    )
    warm_delay_seconds: float = Field(
        10.0,
        ge=0,
        le=600,
        description="after a start, how long workers wait before importing TensorFlow and warming the models "
        "(the first seconds belong to the intake: a PACS sends its backlog as soon as the node answers); a "
        "model job that is due imports at once",
    )
    warm_quiet_seconds: float = Field(
        3.0, ge=0, le=600, description="after the delay, warm up only once no image arrived for this long"
    )
    max_attempts: int = Field(8, ge=1, le=100)
    backoff_base_seconds: float = Field(2.0, gt=0)
    backoff_max_seconds: float = Field(600.0, gt=0)
    poll_seconds: float = Field(0.2, gt=0)
    lease_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="how long a claimed job is held without a heartbeat (sent every third of it); a job whose "
        "runner stopped answering is taken over by another runner after it",
    )
    export_retry_hours: float = Field(
        24.0, gt=0, description="how long a write-back is retried (capped backoff) before it becomes a dead letter"
    )


class SegmentationSection(_Strict):
    """How drafts and approved results are encoded and where models live."""

    seg_type: Literal["BINARY", "LABELMAP"] = "BINARY"
    models_dir: Path | None = Field(None, description="local model registry; default storage_dir/models")
    min_learning_slices: int = Field(5, ge=1)
    labelmap_fallback: bool = Field(
        True, description="a peer that refuses LABELMAP SEGs gets the same segmentation as BINARY"
    )


class LearningSection(_Strict):
    """Guarded local learning: the reference set a new revision must not be worse on, and the replay buffer."""

    guard: bool = Field(
        True, description="validate each learned revision on the reference set before it becomes active"
    )
    tolerance: float = Field(
        0.005,
        ge=0.0,
        le=0.2,
        description="Dice a lineage of candidates may lose in all since its last step that held its ground",
    )
    min_reference_cases: int = Field(
        3, ge=1, le=50, description="below this many reference series, the cautious fallback (held-out slices)"
    )
    reference_cases: int = Field(5, ge=1, le=50, description="approved series kept in the reference set")
    replay_cases: int = Field(8, ge=0, le=100, description="approved series kept in the replay buffer")
    case_slices: int = Field(6, ge=1, le=64, description="labelled slices kept per series")
    replay_slices: int = Field(20, ge=0, le=200, description="replayed slices mixed into one learning step")
    holdout_every: int = Field(4, ge=2, le=20, description="fallback: every n-th labelled slice is held out")
    fallback: Literal["defer", "holdout"] = Field(
        "defer",
        description="until the reference set holds min_reference_cases series: defer (learn nothing, fill it) "
        "or holdout (learn at once, judged on held-out slices of the same series)",
    )
    soften: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        [0.5, 0.25],
        max_length=4,
        description="a rejected candidate is retried at these fractions of its step from the active revision",
    )

    @model_validator(mode="after")
    def _reference_holds_minimum(self) -> LearningSection:
        if self.min_reference_cases > self.reference_cases:
            raise ValueError(
                f"min_reference_cases ({self.min_reference_cases}) exceeds reference_cases "
                f"({self.reference_cases}): the fallback would never end"
            )
        return self


WebhookEvent = Literal["study.pending_review", "study.failed", "study.exported", "job.dead"]


class Webhook(_Strict):
    """An HTTP(S) endpoint told about events (``webhook`` jobs: retried with backoff, DEAD after max_attempts).

    Each delivery is a POST of JSON signed with HMAC-SHA256 (``X-Laurel-Signature: sha256=<hex>`` over
    ``<X-Laurel-Timestamp>.<body>``) with the secret read from the environment variable ``secret_env``.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    url: str
    events: list[WebhookEvent] = Field(min_length=1)
    secret_env: str = Field(description="environment variable holding the HMAC secret (never in this file)")
    connect_timeout_seconds: float = Field(5.0, gt=0, le=120)
    read_timeout_seconds: float = Field(10.0, gt=0, le=600, description="longest wait for each read")
    total_timeout_seconds: float = Field(30.0, gt=0, le=600, description="longest a delivery may take in all")
    max_response_bytes: int = Field(65536, ge=0, le=2**24, description="the most of an answer that is read")
    max_attempts: int = Field(12, ge=1, le=100)
    ca_file: Path | None = Field(None, description="PEM CA bundle for an https:// receiver; default the system's")
    allow_insecure_http: bool = Field(False, description="plain http:// to a host other than loopback (test labs)")

    @model_validator(mode="after")
    def _url(self) -> Webhook:
        import ipaddress
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"webhook {self.name}: url {self.url!r} must look like https://host[:port]/path")
        if parts.scheme == "http" and not self.allow_insecure_http:
            try:
                loopback = ipaddress.ip_address(parts.hostname).is_loopback
            except ValueError:
                loopback = parts.hostname == "localhost"
            if not loopback:
                raise ValueError(
                    f"webhook {self.name}: use https:// for {parts.hostname} "
                    "(or allow_insecure_http: true in a test lab)"
                )
        return self


def _yaml_source(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


class NodeConfig(BaseSettings):
    """The whole node configuration. Build it with :meth:`load`."""

    model_config = SettingsConfigDict(env_prefix="LAUREL_", env_nested_delimiter="__", extra="forbid")

    node: NodeSection = NodeSection()
    peers: list[AnyPeer] = Field(default_factory=list)
    routing: list[RoutingRule] = Field(default_factory=list)
    api: ApiSection = ApiSection()
    federation: FederationSection | None = None
    retention: RetentionSection = RetentionSection()
    jobs: JobsSection = JobsSection()
    segmentation: SegmentationSection = SegmentationSection()
    learning: LearningSection = LearningSection()
    tls: TlsSection | None = None
    webhooks: list[Webhook] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the YAML file (passed as init kwargs).
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _peers_unique(self) -> NodeConfig:
        for attr in ("name", "ae_title"):
            seen: set[str] = set()
            for peer in self.peers if attr == "name" else self.dimse_peers:
                value = getattr(peer, attr)
                if value in seen:
                    raise ValueError(f"two peers share the {attr} {value!r}; each peer needs its own")
                seen.add(value)
        endpoints = [(p.host, p.port) for p in self.dimse_peers if p.receive_results]
        if len(endpoints) != len(set(endpoints)):
            raise ValueError("two result-receiving peers share host and port")
        if self.api.enabled and self.api.port == self.node.port and self.api.host == self.node.host:
            raise ValueError("api.port and node.port must differ")
        if len({w.name for w in self.webhooks}) != len(self.webhooks):
            raise ValueError("two webhooks share a name; each needs its own")
        return self

    @model_validator(mode="after")
    def _tls_complete(self) -> NodeConfig:
        tls_peers = [p.name for p in self.dimse_peers if p.tls]
        if tls_peers and self.tls is None:
            raise ValueError(f"peers {', '.join(tls_peers)} use TLS: configure the tls section (certificate, CAs)")
        if self.tls is not None and self.tls.port is not None:
            if self.tls.plain_port and self.tls.port == self.node.port:
                raise ValueError("tls.port and node.port must differ (or set tls.plain_port: false)")
            if self.api.enabled and self.api.port == self.tls.port:
                raise ValueError("api.port and tls.port must differ")
        return self

    @property
    def dimse_peers(self) -> list[Peer]:
        """The DIMSE peers (AE title, host, port): those that may send to us, and C-STORE destinations."""
        return [p for p in self.peers if isinstance(p, Peer)]

    @classmethod
    def load(cls, path: Path | str | None = None, **overrides: Any) -> NodeConfig:
        """Read and validate a YAML file (or embedded defaults when ``path`` is None).

        Raises :class:`ConfigError` with every problem listed as ``field: message``.
        """
        data = _yaml_source(Path(path) if path is not None else None)
        data.update(overrides)
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = "; ".join(f"{error_location(err['loc'])}: {err['msg']}" for err in exc.errors())
            where = f" in {path}" if path is not None else ""
            raise ConfigError(f"invalid configuration{where}: {problems}") from exc

    @property
    def models_dir(self) -> Path:
        """The local model registry folder."""
        return self.segmentation.models_dir or self.node.storage_dir / "models"

    def peer(self, name_or_ae: str) -> Peer | DicomwebPeer:
        """The configured peer with this name (or AE title); ``KeyError`` saying which exist otherwise."""
        for p in self.peers:
            if name_or_ae in (p.name, getattr(p, "ae_title", None)):
                return p
        known = ", ".join(p.name for p in self.peers) or "none"
        raise KeyError(f"no peer named {name_or_ae!r} is configured (configured: {known})")
