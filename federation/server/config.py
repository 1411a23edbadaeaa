"""The federation server's configuration: pydantic models of ``config/federation.yaml``.

Validated at start; a bad file stops the server with a message naming the field. Any field can be
overridden from the environment with the ``LAUREL_FED_`` prefix and ``__`` between levels, e.g.
``LAUREL_FED_SERVER__PORT=8001`` or ``LAUREL_FED_VALIDATION__THRESHOLD=0.75``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

Strategy = Literal["linear", "delta", "partial"]


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSection(_Strict):
    """Where the server listens and keeps its registry, packages, queued uploads and signing key."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535, description="0 = any free port (tests)")
    data_dir: Path = Path("var/federation")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the registry; default SQLite in data_dir/federation.db "
        "(a PostgreSQL URL such as postgresql+psycopg://laurel@db/federation works too)",
    )
    signing_key: Path | None = Field(
        None, description="PEM file of the server's Ed25519 private key; default data_dir/server_ed25519.pem"
    )
    max_upload_mb: float = Field(128.0, gt=0, description="largest accepted weights file (compressed)")
    max_weights_mb: float = Field(512.0, gt=0, description="largest accepted weights when unpacked")
    trust_zoo_packages: bool = Field(
        True, description="bootstrap from the shipped zoo (recognised by sha256 in models/zoo/manifest.json)"
    )
    tls_certfile: Path | None = Field(
        None, description="PEM certificate (chain) served over HTTPS; with tls_keyfile, the server speaks only HTTPS"
    )
    tls_keyfile: Path | None = Field(None, description="PEM private key of tls_certfile (unencrypted, mode 0600)")
    max_request_kb: float = Field(
        256.0, gt=0, description="largest body of any request other than an upload (JSON statistics)"
    )
    max_concurrent_uploads_per_site: int = Field(
        2, ge=1, le=64, description="uploads of one site received at the same time; more get 429"
    )
    auth_max_failures: int = Field(
        10, ge=1, description="failed authentications per key prefix, and per client address, within the window"
    )
    auth_failure_window_seconds: float = Field(
        60.0, gt=0, description="the window of auth_max_failures; beyond it, argon2 is not run (429 + Retry-After)"
    )
    pseudonym_key: Path | None = Field(
        None, description="secret of the sites' pseudonymous ids (HMAC key); default data_dir/site_pseudonym.key"
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSection:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("set both tls_certfile and tls_keyfile (HTTPS), or neither (plain HTTP on loopback)")
        for path in (self.tls_certfile, self.tls_keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self


class ValidationSection(_Strict):
    """Private reference data and the acceptance rule (Dafne: Dice >= 0.7 before and after the merge)."""

    threshold: float = Field(0.7, ge=0.0, le=1.0, description="minimum mean Dice of candidate and merge")
    tolerance: float = Field(
        0.02, ge=0.0, le=1.0, description="largest allowed Dice drop of the merge against the current version"
    )
    validation_dir: Path | None = Field(
        None, description="reference volumes + labels, one folder per model; default data_dir/validation"
    )
    default_subjects: int = Field(3, ge=1, le=50, description="phantom subjects written when a folder is empty")
    default_slices: int = Field(12, ge=1, le=80, description="slices per default phantom subject")
    default_contrasts: list[Literal["pd", "t1", "t2fs"]] = Field(
        default_factory=lambda: ["pd"],  # type: ignore[arg-type]
        min_length=1,
        description="contrasts of the default phantom subjects, in turn (e.g. [pd, t1] alternates)",
    )
    default_matrix: int | None = Field(
        None, ge=64, le=512, description="in-plane matrix of the default phantoms; None = drawn by seed"
    )


class MergeSection(_Strict):
    """How an accepted update enters the current version."""

    strategy: Strategy = Field(
        "linear",
        description="linear: Dafne's weighted average of current and candidate; delta: current + "
        "weight x discount^staleness x (candidate - base); partial: SegViz, shared block averaged, "
        "task layers taken from the candidate",
    )
    weight: float = Field(0.5, gt=0.0, le=1.0, description="share of the update in the merge (Dafne: 0.5)")
    staleness_discount: float = Field(
        0.5, gt=0.0, le=1.0, description="delta strategy: factor per version the update's base is behind"
    )
    max_staleness: int = Field(
        20, ge=0, description="updates whose base is more than this many versions behind are rejected"
    )
    representation_layers: list[str] = Field(
        default_factory=list,
        description="partial strategy: layer-name prefixes of the shared (representation) block, which is "
        "averaged; every other layer is the task block (default: the encoder, 'enc')",
    )
    task_from: Literal["update", "current"] = Field(
        "update",
        description="partial strategy: where the task block comes from (SegViz: the site that trained it)",
    )


class DashboardSection(_Strict):
    """The HTML dashboard at ``/dashboard`` (aggregate numbers only; no keys, no patient data)."""

    enabled: bool = True
    show_site_names: bool = Field(
        False,
        description="show site names on the dashboard, in GET /api/v1/stats and in published packages; "
        "off: stable pseudonymous ids (site-<HMAC of the name>)",
    )


class FederationConfig(BaseSettings):
    """The whole federation server configuration. Build it with :meth:`load`."""

    model_config = SettingsConfigDict(env_prefix="LAUREL_FED_", env_nested_delimiter="__", extra="forbid")

    server: ServerSection = ServerSection()
    validation: ValidationSection = ValidationSection()
    merge: MergeSection = MergeSection()
    dashboard: DashboardSection = DashboardSection()
    models: list[str] = Field(
        default_factory=lambda: ["leg", "thigh"],
        description="models bootstrapped from the zoo on first start (version history starts there)",
    )

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
    def _models_unique(self) -> FederationConfig:
        if len(set(self.models)) != len(self.models):
            raise ValueError("a model is listed twice under models")
        for name in self.models:
            if not name or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"model name {name!r} must be letters, digits, '-' or '_'")
        return self

    @classmethod
    def load(cls, path: Path | str | None = None, **overrides: Any) -> FederationConfig:
        """Read and validate a YAML file (embedded defaults when ``path`` is None).

        Raises :class:`ConfigError` with every problem listed as ``field: message``.
        """
        data: dict[str, Any] = {}
        if path is not None:
            try:
                loaded = yaml.safe_load(Path(path).read_text()) or {}
            except FileNotFoundError as exc:
                raise ConfigError(f"config file {path} does not exist") from exc
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
            if not isinstance(loaded, dict):
                raise ConfigError(f"config file {path} must hold a mapping at the top level")
            data = loaded
        data.update(overrides)
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
            )
            where = f" in {path}" if path is not None else ""
            raise ConfigError(f"invalid federation configuration{where}: {problems}") from exc

    @property
    def data_dir(self) -> Path:
        """The server's data folder."""
        return self.server.data_dir

    @property
    def db_url(self) -> str:
        """The registry database URL (SQLite in the data folder unless configured)."""
        return self.server.database_url or f"sqlite:///{(self.data_dir / 'federation.db').as_posix()}"

    @property
    def signing_key_path(self) -> Path:
        """The PEM file of the server's Ed25519 private key."""
        return self.server.signing_key or self.data_dir / "server_ed25519.pem"

    @property
    def pseudonym_key_path(self) -> Path:
        """The file of the secret behind the sites' pseudonymous ids."""
        return self.server.pseudonym_key or self.data_dir / "site_pseudonym.key"

    @property
    def validation_dir(self) -> Path:
        """The folder of private reference data (one sub-folder per model)."""
        return self.validation.validation_dir or self.data_dir / "validation"
