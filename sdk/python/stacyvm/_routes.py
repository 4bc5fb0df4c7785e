"""Which method covers each operation of docs/openapi.yaml (operationId ->
method name on Client and AsyncClient). The tests fail when the server
documents an operation missing here, or a method named here is missing."""

ROUTES = {
    "createSandbox": "spawn",
    "listSandboxes": "list",
    "pruneSandboxes": "prune",
    "getSandbox": "get",
    "destroySandbox": "destroy",
    "extendSandbox": "extend",
    "pauseSandbox": "pause",
    "resumeSandbox": "resume",
    "exec": "exec_stream",  # and exec (buffered)
    "sandboxLogs": "logs",
    "writeFile": "write_file",
    "readFile": "read_file",  # and read_text, iter_file, download
    "deleteFile": "delete_file",
    "uploadFile": "upload",
    "listFiles": "list_files",
    "moveFile": "move",
    "chmodFile": "chmod",
    "statFile": "stat",
    "globFiles": "glob",
    "createTemplate": "create_template",
    "listTemplates": "list_templates",
    "getTemplate": "get_template",
    "updateTemplate": "update_template",
    "deleteTemplate": "delete_template",
    "spawnTemplate": "spawn_template",
    "listProviders": "providers",
    "getProvider": "provider",
    "testProviders": "test_providers",
    "listSnapshots": "snapshots",
    "poolStatus": "pool_status",
    "health": "health",
    "metricsSummary": "metrics",
    "events": "events",
    "terminal": "terminal",
    "openapi": "openapi",
    "prometheus": "prometheus_metrics",
}

# Operations the SDKs leave to other clients, with the reason.
NOT_WRAPPED = {
    "execWebSocket": "exec_stream covers the same frames over NDJSON; browsers cannot send X-API-Key on a WebSocket",
    "mcp": "the MCP endpoint is for MCP clients (docs/mcp.md)",
    "createEnvironmentSpec": "environments are new in the server (issue 11); the SDKs wrap them next (issue 13); use the REST routes or `stacyvm env` (docs/environments.md)",
    "listEnvironmentSpecs": "environments are new in the server (issue 11); the SDKs wrap them next (issue 13); use the REST routes or `stacyvm env` (docs/environments.md)",
    "getEnvironmentSpec": "environments are new in the server (issue 11); the SDKs wrap them next (issue 13); use the REST routes or `stacyvm env` (docs/environments.md)",
    "createEnvironmentBuild": "environments are new in the server (issue 11); the SDKs wrap them next (issue 13); use the REST routes or `stacyvm env` (docs/environments.md)",
    "listEnvironmentBuilds": "environments are new in the server (issue 11); the SDKs wrap them next (issue 13); use the REST routes or `stacyvm env` (docs/environments.md)",
    "getEnvironmentBuild": "environments are new in the server (issue 11); the SDKs wrap them next (issue 13); use the REST routes or `stacyvm env` (docs/environments.md)",
    "cancelEnvironmentBuild": "environments are new in the server (issue 11); the SDKs wrap them next (issue 13); use the REST routes or `stacyvm env` (docs/environments.md)",
    "getEnvironmentSpawnConfig": "environments are new in the server (issue 11); the SDKs wrap them next (issue 13); use the REST routes or `stacyvm env` (docs/environments.md)",
    "followEnvironmentBuildLog": "environments are new in the server (issue 11); the SDKs wrap them next (issue 13); use the REST routes or `stacyvm env` (docs/environments.md)",
}
