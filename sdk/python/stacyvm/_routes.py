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
    "createEnvironmentSpec": "create_environment_spec",
    "listEnvironmentSpecs": "list_environment_specs",
    "getEnvironmentSpec": "get_environment_spec",
    "createEnvironmentBuild": "create_environment_build",
    "listEnvironmentBuilds": "list_environment_builds",
    "getEnvironmentBuild": "get_environment_build",
    "cancelEnvironmentBuild": "cancel_environment_build",
    "getEnvironmentSpawnConfig": "environment_spawn_config",
    "followEnvironmentBuildLog": "follow_environment_build_log",
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
}
