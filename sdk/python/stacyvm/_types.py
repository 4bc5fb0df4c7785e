"""What the API returns, typed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, TypedDict, Union


@dataclass
class Sandbox:
    id: str
    state: str
    provider: str
    image: str
    memory_mb: int = 0
    vcpus: int = 0
    owner_id: Optional[str] = None
    template: Optional[str] = None
    created_at: str = ""
    expires_at: str = ""
    metadata: Dict[str, str] = field(default_factory=dict)
    preview_domain: str = ""
    error: str = ""
    idle_timeout: int = 0  # seconds without activity before on_idle (0: none)
    on_idle: str = ""  # "pause" or "destroy"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Sandbox":
        return cls(
            id=d["id"],
            state=d.get("state", ""),
            provider=d.get("provider", ""),
            image=d.get("image", ""),
            memory_mb=d.get("memory_mb", 0),
            vcpus=d.get("vcpus", 0),
            owner_id=d.get("owner_id"),
            template=d.get("template"),
            created_at=d.get("created_at", ""),
            expires_at=d.get("expires_at", ""),
            metadata=dict(d.get("metadata") or {}),
            preview_domain=d.get("preview_domain", ""),
            error=d.get("error", ""),
            idle_timeout=d.get("idle_timeout", 0),
            on_idle=d.get("on_idle", ""),
        )


@dataclass
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str
    duration: str = ""
    timed_out: bool = False
    truncated: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ExecResult":
        return cls(
            exit_code=d.get("exit_code", -1),
            stdout=d.get("stdout", ""),
            stderr=d.get("stderr", ""),
            duration=d.get("duration", ""),
            timed_out=bool(d.get("timed_out", False)),
            truncated=bool(d.get("truncated", False)),
        )


@dataclass
class StreamChunk:
    """A piece of a streamed command's output."""

    stream: str  # "stdout" or "stderr"
    data: str


@dataclass
class StreamExit:
    """The end of a streamed command. A non-zero exit code is not an error."""

    exit_code: int
    timed_out: bool = False
    duration: str = ""


ExecEvent = Union[StreamChunk, StreamExit]


@dataclass
class FileInfo:
    path: str
    size: int
    mode: str
    is_dir: bool
    mod_time: str
    is_symlink: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "FileInfo":
        return cls(
            path=d["path"],
            size=d.get("size", 0),
            mode=d.get("mode", ""),
            is_dir=bool(d.get("is_dir", False)),
            mod_time=d.get("mod_time", ""),
            is_symlink=bool(d.get("is_symlink", False)),
        )


@dataclass
class Event:
    """One server-sent event from GET /api/v1/events."""

    id: int
    type: str
    time: str = ""
    sandbox_id: str = ""
    data: Dict[str, str] = field(default_factory=dict)


class Template(TypedDict, total=False):
    name: str
    version: int
    image: str
    description: Optional[str]
    setup: List[str]
    env: Dict[str, str]
    memory_mb: int
    cpu_cores: int
    ttl_seconds: int
    pool_size: int
    idle_timeout: int
    on_idle: Optional[str]
    provider: Optional[str]
    created_at: str
    updated_at: str


class Capabilities(TypedDict):
    isolation: str
    streaming: bool
    adoption: bool
    snapshots: bool
    network: bool
    resource_limits: bool
    symlinks: bool
    disk_limit: bool
    terminal: bool
    stdin: bool
    signals: bool
    pause: bool


class Provider(TypedDict, total=False):
    name: str
    healthy: bool
    default: bool
    capabilities: Capabilities
    problem: str
    sandbox_count: int
    config: Dict[str, Any]


class Snapshot(TypedDict):
    image: str
    provider: str
    created_at: str


class Pool(TypedDict):
    name: str
    template: Optional[str]
    image: str
    provider: str
    memory_mb: int
    vcpus: int
    policy: str
    target: int
    ready: int
    creating: int
    claimed: int
    misses: int
    failures: int
    problem: Optional[str]


class PoolStatus(TypedDict):
    enabled: bool
    vms: int
    max_vms: int
    total_users: int
    max_users_per_vm: int
    pools: List[Pool]


class Health(TypedDict):
    status: str
    version: str
    uptime: str


class MetricsSummary(TypedDict, total=False):
    uptime: str
    sandboxes_active: int
    sandboxes_by_state: Dict[str, int]
    sandboxes_by_provider: Dict[str, int]
    spawns_total: int
    execs_total: int
    spawn_failures_total: int
    events_published_total: int
    providers_loaded: List[str]
    providers_declined: List[str]


class EnvironmentSpec(TypedDict, total=False):
    """An owner's image recipe (docs/environments.md)."""

    id: str
    owner_id: str
    name: str
    base_image: str
    python_packages: List[str]
    apt_packages: List[str]
    python_version: str
    created_at: str


class BuildArtifact(TypedDict):
    target: str
    ref: str
    digest: str
    size: int


class EnvironmentBuild(TypedDict, total=False):
    """A build of a spec: ``status`` is queued, building, ready, failed or canceled."""

    id: str
    spec_id: str
    owner_id: str
    status: str
    targets: List[str]
    image: str
    log: str
    reason: str
    attempts: int
    artifacts: List[BuildArtifact]
    created_at: str
    updated_at: str
    started_at: str
    finished_at: str


class EnvironmentBuildEntry(TypedDict):
    """One row of list_environment_builds."""

    build: EnvironmentBuild
    spec: EnvironmentSpec


class SpawnConfig(TypedDict):
    """spawn(image, provider=provider) runs the build's image."""

    build_id: str
    ready: bool
    image: str
    provider: str


class BuildLogFrame(TypedDict, total=False):
    """One line of a followed build log: ``data`` (output), ``skipped``
    (bytes the log's bound dropped first), or the last one, ``type``
    "status" with ``status``, ``image`` and ``reason``."""

    type: str
    data: str
    skipped: int
    status: str
    reason: str
    image: str
