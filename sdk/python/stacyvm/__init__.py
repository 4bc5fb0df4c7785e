"""StacyVM's Python SDK: disposable sandboxes for AI agents.

    from stacyvm import Client
    with Client("http://127.0.0.1:7423", api_key="KEY") as c:
        with c.sandbox(ttl="10m") as sb:
            print(c.exec(sb.id, "echo hi").stdout)
"""

from ._async import AsyncClient
from ._client import Client
from ._terminal import AsyncTerminal, Terminal
from ._errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    ExecTimeoutError,
    ForbiddenError,
    IncompleteStreamError,
    InternalError,
    LimitError,
    MethodNotAllowedError,
    MisdirectedRequestError,
    NotFoundError,
    SandboxDestroyedError,
    SandboxFileNotFoundError,
    StacyVMError,
    UnavailableError,
    UnimplementedError,
    UnsupportedMediaTypeError,
)
from ._types import (
    BuildArtifact,
    BuildLogFrame,
    EnvironmentBuild,
    EnvironmentBuildEntry,
    EnvironmentSpec,
    SpawnConfig,
    Event,
    ExecEvent,
    ExecResult,
    FileInfo,
    Health,
    MetricsSummary,
    Pool,
    PoolStatus,
    Provider,
    Sandbox,
    Snapshot,
    StreamChunk,
    StreamExit,
    Template,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "Client", "AsyncTerminal", "Terminal",
    "AuthError", "BadRequestError", "ConflictError", "ExecTimeoutError", "ForbiddenError",
    "IncompleteStreamError", "InternalError", "LimitError", "MethodNotAllowedError",
    "MisdirectedRequestError", "NotFoundError", "SandboxDestroyedError", "SandboxFileNotFoundError",
    "StacyVMError", "UnavailableError", "UnimplementedError", "UnsupportedMediaTypeError",
    "Event", "ExecEvent", "ExecResult", "FileInfo", "Health", "MetricsSummary", "Pool", "PoolStatus",
    "Provider", "Sandbox", "Snapshot", "StreamChunk", "StreamExit", "Template",
    "BuildArtifact", "BuildLogFrame", "EnvironmentBuild", "EnvironmentBuildEntry", "EnvironmentSpec", "SpawnConfig",
]
