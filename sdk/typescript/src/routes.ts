/** Which method covers each operation of docs/openapi.yaml. The tests fail
 * when the server documents an operation missing here, or a method named
 * here is missing from Client. */
export const ROUTES: Record<string, string> = {
  createSandbox: "spawn",
  listSandboxes: "list",
  pruneSandboxes: "prune",
  getSandbox: "get",
  destroySandbox: "destroy",
  extendSandbox: "extend",
  pauseSandbox: "pause",
  resumeSandbox: "resume",
  exec: "execStream", // and exec (buffered)
  sandboxLogs: "logs",
  writeFile: "writeFile",
  readFile: "download", // and readFile, readText, iterFile
  deleteFile: "deleteFile",
  uploadFile: "upload",
  listFiles: "listFiles",
  moveFile: "move",
  chmodFile: "chmod",
  statFile: "stat",
  globFiles: "glob",
  createTemplate: "createTemplate",
  listTemplates: "listTemplates",
  getTemplate: "getTemplate",
  updateTemplate: "updateTemplate",
  deleteTemplate: "deleteTemplate",
  spawnTemplate: "spawnTemplate",
  createEnvironmentSpec: "createEnvironmentSpec",
  listEnvironmentSpecs: "listEnvironmentSpecs",
  getEnvironmentSpec: "getEnvironmentSpec",
  createEnvironmentBuild: "createEnvironmentBuild",
  listEnvironmentBuilds: "listEnvironmentBuilds",
  getEnvironmentBuild: "getEnvironmentBuild",
  cancelEnvironmentBuild: "cancelEnvironmentBuild",
  getEnvironmentSpawnConfig: "environmentSpawnConfig",
  followEnvironmentBuildLog: "followEnvironmentBuildLog",
  listProviders: "providers",
  getProvider: "provider",
  testProviders: "testProviders",
  listSnapshots: "snapshots",
  poolStatus: "poolStatus",
  health: "health",
  metricsSummary: "metrics",
  events: "events",
  terminal: "terminal",
  openapi: "openapi",
  prometheus: "prometheusMetrics",
};

/** Operations the SDKs leave to other clients, with the reason. */
export const NOT_WRAPPED: Record<string, string> = {
  execWebSocket: "execStream carries the same frames over NDJSON; browsers cannot send X-API-Key on a WebSocket",
  mcp: "the MCP endpoint is for MCP clients (docs/mcp.md)",
};
