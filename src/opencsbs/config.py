"""Settings of opencsbs, from (highest first) command-line options, environment variables ``OPENCSBS_*``
(nested with ``__``, e.g. ``OPENCSBS_AUTH__MODE=keystone``), a YAML config file (``--config FILE`` or
``OPENCSBS_CONFIG``) and the defaults below. ``docs/configuration.md`` lists every key.
"""

from __future__ import annotations

import difflib
import json
import os
import types
import typing
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from opencsbs import PROVIDER_ID


class ConfigError(ValueError):
    """A configuration mistake, told in one line that names where it is: the config file and its key (``FILE:
    unknown key 'prot' (did you mean 'port'?)``), or the environment variable (``OPENCSBS_CLOUD__AZS_WITHOUT_BACKUP:
    expected a JSON list, e.g. '["az-nobackup"]'``). The CLI prints it and exits with code 2."""


class AuthSettings(BaseModel):
    """``mode``: ``local`` (tokens made by ``opencsbs token create``) or ``keystone``."""

    #: ``local``: tokens made by ``opencsbs token create``; ``keystone``: tokens validated by Keystone
    mode: Literal["local", "keystone"] = "local"
    #: Keystone's identity URL (keystone mode), e.g. ``http://127.0.0.1:5000/v3``
    keystone_url: str | None = None
    #: service credentials for validating tokens (keystone mode)
    service_username: str | None = None
    service_password: str | None = None
    service_project_name: str | None = None
    service_user_domain: str = "Default"
    service_project_domain: str = "Default"
    #: seconds a validated (or refused) token stays cached; 0 disables the cache
    cache_seconds: int = 60
    #: most tokens kept in the cache
    cache_size: int = 10000
    #: seconds to wait for Keystone before answering 503
    keystone_timeout: float = 10.0
    #: YAML file overriding the default API policy rules (docs/keystone.md, "Who may act on other projects")
    policy_file: Path | None = None
    #: the operator's admin project, by id: its tokens pass ``is_admin_project:True`` (by default its admins may act
    #: on every project, rule ``context_is_admin``); None: only system-scoped tokens are cloud admins
    admin_project_id: str | None = None
    #: keystone mode: the admin project by name, in domain ``admin_project_domain`` (instead of, or with, the id)
    admin_project_name: str | None = None
    admin_project_domain: str = "Default"


class RbdSettings(BaseModel):
    """How opencsbs reaches the images of one Ceph RBD backend (the client settings the Cinder RBD backend
    already has: ``rbd_ceph_conf``, ``rbd_user``, ``rbd_pool``; see docs/clouds.md)."""

    #: ``ceph.conf`` of the cluster (None: librados's default, ``/etc/ceph/ceph.conf``)
    conf: Path | None = None
    #: Ceph user (``client.`` prefix optional); it needs ``profile rbd`` (read-write) on the pool
    user: str = "opencsbs"
    #: keyring file of that user (None: the ``keyring`` setting of ``ceph.conf``)
    keyring: Path | None = None
    #: pool of the volumes' images (Cinder's ``rbd_pool``; libvirt disks name their own pool)
    pool: str = "volumes"
    #: image name of a volume, ``{id}`` being the volume's id (Cinder's ``volume_name_template``)
    image_name: str = "volume-{id}"
    #: seconds to reach the monitors, and per OSD request, before the step fails with "unreachable"
    connect_timeout: float = 20.0
    op_timeout: float = 120.0
    #: reads (of one chunk each) kept in flight while a snapshot is copied; writes in flight during a restore
    read_ahead: int = 8
    #: pool of the scratch images restore drills restore into (None: ``pool``); the user needs ``profile rbd``
    #: on it too
    drill_pool: str | None = None


class CloudSettings(BaseModel):
    """``driver``: ``sandbox`` (built in), ``libvirt`` or ``openstack``."""

    #: ``sandbox`` (built in), ``libvirt`` or ``openstack``
    driver: Literal["sandbox", "libvirt", "openstack"] = "sandbox"
    #: sandbox: YAML inventory loaded at start-up (see examples/sandbox.yaml)
    inventory: Path | None = None
    #: libvirt: connection URI and the availability zone reported for the host
    libvirt_uri: str = "qemu:///system"
    libvirt_az: str = "nova"
    libvirt_project_id: str | None = None
    #: libvirt: the name of the KVM host ``libvirt_uri`` reaches (placement: its jobs run only on workers of that
    #: host); default the host of a remote URI (``qemu+ssh://backup@kvm-2/system`` -> ``kvm-2``), else
    #: ``worker.host``
    libvirt_host: str | None = None
    #: libvirt: where backups stage each disk's point-in-time copy (a sparse raw file) and QEMU's copy-before-write
    #: scratch image, both deleted once the copy is in the bank, and where restores of qcow2 disks stage the raw
    #: image; default ``<data_dir>/libvirt-scratch``. Needs room for the allocated data of a server's disks.
    libvirt_scratch_dir: Path | None = None
    #: openstack: clouds.yaml entry used as the service user (needs the admin role: it lists every project's
    #: servers and volumes); file from ``openstack_clouds_yaml`` or openstacksdk's search path
    openstack_cloud: str | None = None
    openstack_clouds_yaml: Path | None = None
    #: openstack: seconds per API call before answering 503
    openstack_timeout: float = 30.0
    #: openstack, auth.mode keystone: ask Nova/Cinder/Ironic with the caller's own token (only what that project
    #: may see); False: always the service user
    openstack_pass_token: bool = True
    #: openstack: Keystone URL for the caller's token (default: auth.keystone_url, else the cloud's auth_url)
    openstack_auth_url: str | None = None
    openstack_region: str | None = None
    #: openstack: Cinder volume type name -> storage service type (e.g. {"dss-ssd": "DSS"}), for CSBS.6033
    openstack_volume_service_types: dict[str, str] = Field(default_factory=dict)
    #: openstack: ask Ironic for bare-metal servers (None: when the catalog has a baremetal endpoint)
    openstack_baremetal: bool | None = None
    #: openstack: how far back (hours) deleted servers are looked up to answer "terminated" (CSBS.6001);
    #: 0 disables the lookup (deleted servers are then "not found")
    openstack_deleted_lookback_hours: int = 168
    #: openstack data side: Cinder backend name (the ``backend`` of a volume's ``host@backend#pool``, a section of
    #: cinder.conf's ``enabled_backends``) -> its Ceph RBD settings. Volumes of other backends cannot be backed up
    #: (CSBS.6061); empty: no data side at all (backups fail with CSBS.9998)
    openstack_rbd_backends: dict[str, RbdSettings] = Field(default_factory=dict)
    #: openstack: a running server with several volumes is paused while they are snapshotted; longer than this
    #: (seconds) and the snapshots are dropped and the step retried
    openstack_pause_timeout: float = 30.0
    #: openstack: seconds to wait for Nova to stop, start, pause or unpause a server
    openstack_power_timeout: float = 300.0
    #: libvirt: Ceph client settings for ``<disk type='network'>`` RBD disks (the disk names its pool and image);
    #: None: such disks cannot be backed up
    libvirt_rbd: RbdSettings | None = None
    #: availability zones where backup is not offered (CSBS.6027)
    azs_without_backup: list[str] = Field(default_factory=list)
    #: volume service types that cannot be backed up (CSBS.6033), compared case-insensitively
    unprotectable_service_types: list[str] = Field(default_factory=lambda: ["dss"])


class BankSettings(BaseModel):
    """Where backup data lives: ``backend`` ``local`` (a folder) or ``s3``."""

    backend: Literal["local", "s3"] = "local"
    path: Path | None = None  # local: default <data_dir>/bank
    #: s3: endpoint URL, bucket, credentials, region and key prefix of the bank
    s3_endpoint: str | None = None
    s3_bucket: str = "opencsbs"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    s3_prefix: str = ""
    #: s3: use S3 Object Lock (docs/bank.md): the bucket is created with it, and the index and chunks of a
    #: backup under a retention lock get a retention the storage enforces (mode and retain-until from the lock)
    s3_object_lock: bool = False
    #: AES-256-GCM key file (32 raw bytes or 64 hex chars); None disables encryption
    encryption_key_file: Path | None = None
    #: zstd level of stored chunks
    compression_level: int = 1
    #: worker threads hashing/compressing chunks (S3 uses at least 8 for its network waits)
    threads: int = 2
    #: local backend: make new chunks, and each index, durable (fsync) before the index is written
    fsync: bool = True


class ReplicaSettings(BankSettings):
    """A second bank backups are copied to (``replicas:`` list, docs/replication.md): the settings of a bank
    (``backend`` ``local`` with its own ``path``, or ``s3`` with its own endpoint, bucket and credentials, and
    optionally its own ``encryption_key_file``) plus its ``name``, by which copies and rules refer to it.
    Credentials never leave the process: answers, logs and errors name a replica and its location only."""

    #: the replica's name ([A-Za-z0-9._-], unique among the replicas)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    #: restores take a chunk from this replica when the primary bank's copy is missing or damaged
    restore_fallback: bool = True


class QuotaSettings(BaseModel):
    """Per-project quotas (``GET /v1/{project_id}/quotas``, enforced with CSBS.9006 when a backup starts).

    ``backups``: most checkpoint_items kept (not deleted); ``backup_capacity_gb``: most backup capacity in GB
    (the sum of the backups' stored sizes); -1 means unlimited. ``projects`` overrides either per project id.
    """

    backups: int = 600
    backup_capacity_gb: int = -1
    projects: dict[str, dict[str, int]] = Field(default_factory=dict)

    def for_project(self, project_id: str) -> tuple[int, int]:
        """``(backups, backup_capacity_gb)`` for ``project_id``."""
        own = self.projects.get(project_id, {})
        return int(own.get("backups", self.backups)), int(own.get("backup_capacity_gb", self.backup_capacity_gb))


class EngineSettings(BaseModel):
    """Backup/restore job execution.

    ``lease_seconds``: how long a worker owns a job without a heartbeat (a crashed worker's job is taken over
    after this); ``poll_seconds``: idle workers look for new jobs this often; ``max_attempts``: claims of one job
    before it is failed; ``progress_seconds``: how often progress is written to the database;
    ``job_retention_days``: finished (done/failed) jobs older than this are deleted by the scheduler's
    housekeeping (0 or less: kept for ever); ``housekeeping_seconds``: time between two housekeeping passes
    (finished jobs, the sandbox's unneeded change logs, the bank's garbage collection every
    ``gc_interval_seconds`` with ``gc_grace_seconds``; docs/engine.md).
    """

    lease_seconds: float = 30.0
    poll_seconds: float = 0.5
    max_attempts: int = 3
    progress_seconds: float = 1.0
    job_retention_days: float = 7.0
    housekeeping_seconds: float = 3600.0
    #: housekeeping runs the bank's garbage collection when the last one (``gc/finished``, by any process) ended
    #: longer ago than this (seconds), so deleted, retention-deleted and failed backups give their chunks back;
    #: 0 or less: only ``opencsbs bank gc`` collects (docs/bank.md)
    gc_interval_seconds: float = 86400.0
    #: the garbage collection of housekeeping keeps unreferenced chunks younger than this (seconds)
    gc_grace_seconds: float = 3600.0
    #: when set, the scheduler collects the bank's garbage at these times (UTC) instead of every
    #: ``gc_interval_seconds``: an RRULE as a policy's (``FREQ=DAILY;BYHOUR=3;BYMINUTE=0``, ``FREQ=WEEKLY;BYDAY=SU;
    #: BYHOUR=4;BYMINUTE=30``) or the whole ``BEGIN:VCALENDAR...`` pattern (engine/bank_checks.py)
    gc_schedule: str | None = None
    #: when set, the scheduler verifies the whole bank (as ``opencsbs bank verify``) at these times (UTC; an RRULE
    #: as ``gc_schedule``); unset: only ``opencsbs bank verify`` and verify runs check the bank
    verify_schedule: str | None = None
    #: the most a worker reads from one disk snapshot per second during a backup, in MiB/s, so a backup window does
    #: not saturate the production storage (what restic's ``--limit-download`` and borg's ``--upload-ratelimit`` do
    #: for their side); 0: unlimited (docs/engine.md)
    read_limit_mib_s: float = Field(default=0.0, ge=0)


class WorkerSettings(BaseModel):
    """What the workers of this process (``opencsbs worker``, or ``serve``'s worker threads) declare they can serve
    (placement, docs/engine.md "Placement"): a job runs only on a worker whose capabilities hold every one of its
    needs. ``host``: this machine's name (default: the system's host name); ``zones``: the availability zones whose
    servers this worker serves (empty: every zone); ``capabilities``: None to take them from the cloud driver (a
    sandbox worker serves the sandbox files of its host, a libvirt worker the domains of its libvirt host, an
    OpenStack worker the Ceph backends it has settings for), or the exact list this worker serves (e.g.
    ``["driver:libvirt", "libvirt:kvm-2"]``; ``host:<host>`` and the zones are always added)."""

    #: this machine's name (placement: the host a sandbox's files or a local libvirt's domains are on)
    host: str | None = Field(default=None, min_length=1, max_length=255)
    #: availability zones served (empty: every zone)
    zones: list[str] = Field(default_factory=list)
    #: None: from the cloud driver; else exactly these (``kind:value`` strings, ``kind:*`` matches every value)
    capabilities: list[str] | None = None

    @field_validator("capabilities", "zones")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        for one in value or []:
            if not one or len(one) > 255 or any(c.isspace() for c in one):
                raise ValueError(f"{one!r}: a capability or zone is a non-empty word of at most 255 characters")
        return value

    @property
    def host_name(self) -> str:
        """``host``, else the system's host name."""
        import socket

        return self.host or socket.gethostname()


class Settings(BaseSettings):
    """All settings. ``data_dir`` holds the SQLite database, the local bank and the sandbox volume files."""

    model_config = SettingsConfigDict(env_prefix="OPENCSBS_", env_nested_delimiter="__", extra="ignore")

    #: listen address of ``opencsbs serve``
    host: str = "127.0.0.1"
    #: listen port of ``opencsbs serve`` (1-65535)
    port: int = Field(default=8799, ge=1, le=65535)
    #: state directory: SQLite database, local bank, sandbox volume files
    data_dir: Path = Path(os.path.expanduser("~/.local/share/opencsbs"))
    #: SQLAlchemy URL; default ``sqlite:///<data_dir>/opencsbs.db``
    database_url: str | None = None
    #: the one backup provider's id (the reference fixes it for CSBS)
    provider_id: str = PROVIDER_ID
    #: region reported in documents that name one
    region: str = "RegionOne"
    #: most items one check_protectable / check_restorable request may carry
    batch_limit: int = 1000
    #: largest request body in bytes
    max_body_bytes: int = 1024 * 1024
    #: seconds a client has to send a whole request body (408 after that)
    body_timeout: float = 60.0
    #: seconds an idle keep-alive connection stays open. 75 s (nginx's default), longer than the idle expiry of
    #: client pools (httpx 5 s, aiohttp 15 s, urllib3 none) and of proxies in front (AWS ALB 60 s), so a server
    #: never closes a connection at the moment a busy client sends its next request on it (docs/performance.md)
    keepalive_timeout: float = 75.0
    #: HTTP worker processes of ``serve`` (``--workers``); more than 1 needs PostgreSQL (docs/deployment.md)
    http_processes: int = Field(default=1, ge=1)
    #: addresses of reverse proxies whose X-Forwarded-For/-Proto headers are trusted (comma-separated, "*": any)
    forwarded_allow_ips: str = "127.0.0.1"
    #: backup/restore worker threads inside ``serve`` (0: run ``opencsbs worker`` processes instead)
    workers: int = 2
    #: what this process's workers serve (placement: host, zones, capabilities)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    #: run the policy scheduler inside ``serve``
    scheduler: bool = True
    #: seconds between two scheduler passes (due slots, then due retention)
    scheduler_interval: float = 20.0
    #: hours between two retention passes over a scheduled operation (also applied after each of its runs)
    retention_interval_hours: float = 1.0
    #: most backup policies per project (user guide: 32; over it CSBS.0001)
    policy_quota: int = 32
    #: most servers bound to one policy (user guide: 64)
    policy_max_resources: int = 64
    #: PEM certificate and key: ``serve`` speaks HTTPS when both are set
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: log level of every process (opencsbs and uvicorn loggers): critical, error, warning, info, debug
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    #: log line format: ``text`` (time, level, logger, request or job id, message) or ``json`` (one object a line)
    log_format: Literal["text", "json"] = "text"
    #: bearer token Prometheus must send to read ``/metrics`` (``Authorization: Bearer ...``); None: no token
    #: needed (the metrics name server and project ids: keep the endpoint behind a proxy or set a token)
    metrics_token: str | None = None

    auth: AuthSettings = Field(default_factory=AuthSettings)
    cloud: CloudSettings = Field(default_factory=CloudSettings)
    bank: BankSettings = Field(default_factory=BankSettings)
    #: second banks backups are copied to (docs/replication.md)
    replicas: list[ReplicaSettings] = Field(default_factory=list)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlFileSource(settings_cls)

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: list[ReplicaSettings]) -> list[ReplicaSettings]:
        names = [r.name for r in value]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"replica names must be unique: {', '.join(dup)}")
        for r in value:
            if r.backend == "local" and r.path is None:
                raise ValueError(f"replica {r.name}: a local replica needs its own path")
        return value

    def replica(self, name: str) -> ReplicaSettings | None:
        """The replica called ``name``, or None."""
        return next((r for r in self.replicas if r.name == name), None)

    @property
    def db_url(self) -> str:
        """The effective database URL."""
        return self.database_url or f"sqlite:///{self.data_dir / 'opencsbs.db'}"

    @property
    def volumes_dir(self) -> Path:
        """Where the sandbox keeps its volume files."""
        return self.data_dir / "sandbox" / "volumes"

    @property
    def bank_path(self) -> Path:
        """The local bank folder."""
        return self.bank.path or self.data_dir / "bank"


_CONFIG_FILE: ContextVar[str | None] = ContextVar("opencsbs_config_file", default=None)


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML file given to :func:`load_settings` (``--config``), else the one named by
    ``OPENCSBS_CONFIG``."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _CONFIG_FILE.get() or os.environ.get("OPENCSBS_CONFIG")
        if not path:
            return {}
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{where}: invalid YAML: {problem}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the config file must hold a mapping of settings, not {type(data).__name__}")
        check_keys(data, self.settings_cls, str(path))
        return data


#: ``OPENCSBS_*`` environment variables that are not settings (the CLI's, the test tools': scripts/test.sh
#: exports the test components' port variables, which the opencsbs processes the tests start inherit)
NOT_SETTINGS = {"OPENCSBS_CONFIG", "OPENCSBS_SERVE_SETTINGS_JSON", "OPENCSBS_URL", "OPENCSBS_TOKEN",
                "OPENCSBS_DEBUG", "OPENCSBS_WORK", "OPENCSBS_NS", "OPENCSBS_CHROMIUM", "OPENCSBS_SDK_BASE_PYTHON",
                "OPENCSBS_FUZZ_EXAMPLES", "OPENCSBS_S3_TEST_SECRET", "OPENCSBS_KEYSTONE_PORT",
                "OPENCSBS_CEPH_MON_PORT", "OPENCSBS_CEPH_MON_PORT2", "OPENCSBS_RGW_PORT", "OPENCSBS_OPENSTACK_PORTS"}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model ``annotation`` holds (``X`` or ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def _value_model_of(annotation: Any) -> type[BaseModel] | None:
    """``X`` for ``dict[str, X]`` where X is a settings model (e.g. ``openstack_rbd_backends``), else None."""
    if typing.get_origin(annotation) is dict:
        args = typing.get_args(annotation)
        return _model_of(args[1]) if len(args) == 2 else None
    return None


def _hint(name: str, known: typing.Iterable[str], spell=lambda k: repr(k)) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {spell(close[0])}?)" if close else ""


def check_keys(data: dict, model: type[BaseModel], where: str, prefix: str = "") -> None:
    """Refuse keys of ``data`` (a config file's mapping, nested) that ``model`` does not have.

    Raises :class:`ConfigError` ``"<where>: unknown key 'cloud.drvier' (did you mean 'cloud.driver'?)"``.
    """
    for key, value in data.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            known = [prefix + k for k in model.model_fields]
            full = prefix + str(key)
            raise ConfigError(f"{where}: unknown key {full!r}{_hint(full, known)}")
        sub = _model_of(field.annotation)
        if sub is not None and isinstance(value, dict):
            check_keys(value, sub, where, f"{prefix}{key}.")
        each = _value_model_of(field.annotation)
        if each is not None and isinstance(value, dict):
            for name, one in value.items():
                if isinstance(one, dict):
                    check_keys(one, each, where, f"{prefix}{key}.{name}.")


def _env_name(path: list[str]) -> str:
    return "OPENCSBS_" + "__".join(path).upper()


def check_environment(environ: typing.Mapping[str, str] | None = None) -> None:
    """Refuse ``OPENCSBS_*`` variables that look like settings but are not, and complex values that are not JSON.

    A variable is refused when it nests under a settings group (``OPENCSBS_CLOUD__DRVIER``) or its name is close to
    a setting (``OPENCSBS_PROT``); others (``OPENCSBS_TEST_*``, :data:`NOT_SETTINGS`, names of other tools) are left
    alone. A list or mapping setting must be JSON. Raises :class:`ConfigError` naming the variable, e.g.
    ``OPENCSBS_CLOUD__AZS_WITHOUT_BACKUP: expected a JSON list, e.g. '["az-nobackup"]'``.
    """
    environ = os.environ if environ is None else environ
    for var, value in sorted(environ.items()):
        upper = var.upper()
        if not upper.startswith("OPENCSBS_") or upper in NOT_SETTINGS or upper.startswith("OPENCSBS_TEST_"):
            continue
        _check_env_var(var, value, upper[len("OPENCSBS_"):].lower().split("__"))


def _check_env_var(var: str, value: str, parts: list[str]) -> None:
    model: type[BaseModel] = Settings
    done: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        field = model.model_fields.get(part)
        if field is None:
            if not done and len(parts) == 1 and not difflib.get_close_matches(part, list(model.model_fields), 1, 0.6):
                return  # not a setting's name: another tool's variable
            known = [_env_name(done + [k]) for k in model.model_fields]
            raise ConfigError(f"{var}: unknown setting {'.'.join(done + [part])!r}"
                              f"{_hint(_env_name(done + [part]), known, spell=str)}")
        done.append(part)
        sub = _model_of(field.annotation)
        each = _value_model_of(field.annotation)
        if i + 1 < len(parts) and sub is not None:
            model = sub
        elif i + 2 < len(parts) and each is not None:
            done.append(parts[i + 1])
            model = each
            i += 1
        elif i + 2 == len(parts) and each is not None:  # one entry as a JSON object
            _check_env_value(var, value, each)
            return
        elif i + 1 < len(parts) and typing.get_origin(field.annotation) is dict:
            return  # an entry of a free mapping (quotas.projects.<id>): pydantic checks its value
        elif i + 1 < len(parts):
            raise ConfigError(f"{var}: {'.'.join(done)!r} has no part {parts[i + 1]!r}")
        else:
            _check_env_value(var, value, field.annotation)
        i += 1


def _check_env_value(var: str, value: str, annotation: Any) -> None:
    """A list, mapping or settings-group value must be JSON of that shape."""
    origin = typing.get_origin(annotation)
    if origin is list:
        shape, example = "list", json.dumps([v.strip() for v in value.split(",") if v.strip()] or ["a", "b"])
    elif origin is dict or _model_of(annotation) is not None:
        shape, example = "object", '{"key": "value"}'
    else:
        return
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, list if shape == "list" else dict):
        raise ConfigError(f"{var}: expected a JSON {shape}, e.g. '{example}'")


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config_file`` (or ``$OPENCSBS_CONFIG``), the environment and ``overrides``
    (None values in ``overrides`` are ignored).

    Raises :class:`ConfigError` (one line) for a config file that cannot be read, is not YAML or has an unknown key,
    and for an ``OPENCSBS_*`` variable that is no setting or whose list/mapping value is not JSON;
    ``pydantic.ValidationError`` for a value of the wrong type.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    # The file is handed to the YAML source through a context variable, not the process environment, so one
    # call's --config never leaks into later settings of the same process.
    check_environment()
    token = _CONFIG_FILE.set(str(config_file) if config_file is not None else None)
    try:
        return Settings(**clean)
    finally:
        _CONFIG_FILE.reset(token)
