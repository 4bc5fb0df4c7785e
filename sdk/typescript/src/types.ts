/** What the API takes and returns. Field names are the wire's. */

export type State =
  | "creating"
  | "pooled"
  | "running"
  | "pausing"
  | "paused"
  | "resuming"
  | "stopped"
  | "error"
  | "destroying"
  | "destroyed";

export interface Sandbox {
  id: string;
  state: State;
  provider: string;
  image: string;
  memory_mb: number;
  vcpus: number;
  owner_id: string | null;
  template: string | null;
  created_at: string;
  expires_at: string;
  metadata: Record<string, string>;
  preview_domain: string;
  error?: string;
  /** Seconds without activity before on_idle happens (absent: none). */
  idle_timeout?: number;
  on_idle?: "pause" | "destroy";
}

/** A Go duration string ("30s", "5m") or a number of seconds. */
export type Duration = string | number;
/** Octal permission bits: "0644" or 0o644. */
export type Mode = string | number;

export interface SpawnOptions {
  image?: string;
  provider?: string;
  memory_mb?: number;
  vcpus?: number;
  ttl?: Duration;
  template?: string;
  owner_id?: string;
  metadata?: Record<string, string>;
  disk_mb?: number;
  network?: "" | "none" | "bridge";
  /** Seconds without activity before on_idle happens (0: the template's, then the server's). */
  idle_timeout?: number;
  on_idle?: "pause" | "destroy";
}

export interface TemplateSpawnOptions {
  provider?: string;
  ttl?: Duration;
  owner_id?: string;
  metadata?: Record<string, string>;
}

export interface ListOptions {
  owner_id?: string;
  state?: State;
  provider?: string;
}

export interface ExecOptions {
  args?: string[];
  env?: Record<string, string>;
  workdir?: string;
  timeout?: Duration;
}

export interface ExecResult {
  exit_code: number;
  stdout: string;
  stderr: string;
  duration: string;
  timed_out?: boolean;
  truncated?: boolean;
}

/** A piece of a streamed command's output. */
export interface StreamChunk {
  type: "chunk";
  stream: "stdout" | "stderr";
  data: string;
}

/** The end of a streamed command. A non-zero exit code is not an error. */
export interface StreamExit {
  type: "exit";
  exit_code: number;
  timed_out?: boolean;
  duration?: string;
}

export type ExecFrame = StreamChunk | StreamExit;

export interface FileInfo {
  path: string;
  size: number;
  mode: string;
  is_dir: boolean;
  mod_time: string;
  is_symlink?: boolean;
}

export interface Template {
  name: string;
  image: string;
  version?: number;
  description?: string | null;
  setup?: string[];
  env?: Record<string, string>;
  memory_mb?: number;
  cpu_cores?: number;
  ttl_seconds?: number;
  pool_size?: number;
  provider?: string | null;
  created_at?: string;
  updated_at?: string;
  idle_timeout?: number;
  on_idle?: string | null;
}

export interface Capabilities {
  isolation: "none" | "process" | "container" | "user-kernel" | "vm";
  streaming: boolean;
  adoption: boolean;
  snapshots: boolean;
  network: boolean;
  resource_limits: boolean;
  symlinks: boolean;
  disk_limit: boolean;
  terminal?: boolean;
  stdin?: boolean;
  signals?: boolean;
  /** POST …/pause and …/resume work. */
  pause?: boolean;
}

export interface Provider {
  name: string;
  healthy: boolean;
  default: boolean;
  capabilities: Capabilities;
  problem?: string;
}

export interface ProviderDetail extends Provider {
  sandbox_count: number;
  config: Record<string, unknown>;
}

export interface Snapshot {
  image: string;
  provider: string;
  created_at: string;
}

export interface Pool {
  name: string;
  template: string | null;
  image: string;
  provider: string;
  memory_mb: number;
  vcpus: number;
  policy: "cold" | "reject";
  target: number;
  ready: number;
  creating: number;
  claimed: number;
  misses: number;
  failures: number;
  problem: string | null;
}

export interface PoolStatus {
  enabled: boolean;
  vms: number;
  max_vms: number;
  total_users: number;
  max_users_per_vm: number;
  pools: Pool[];
}

export interface Health {
  status: "ok";
  version: string;
  uptime: string;
}

export interface MetricsSummary {
  uptime: string;
  sandboxes_active: number;
  sandboxes_by_state: Record<string, number>;
  sandboxes_by_provider: Record<string, number>;
  spawns_total: number;
  execs_total: number;
  spawn_failures_total: number;
  events_published_total: number;
  providers_loaded: string[];
  providers_declined: string[];
}

export interface StacyEvent {
  id: number;
  type: string;
  sandbox_id?: string;
  time: string;
  data?: Record<string, string>;
}

/** Every call takes an AbortSignal; aborting a stream kills its command. */
export interface CallOptions {
  signal?: AbortSignal;
}

/** Client.terminal's options. The signal stays bound to the session:
 * aborting it later closes the terminal. */
export interface TerminalOptions extends CallOptions {
  cols?: number;
  rows?: number;
  /** A shell string; default the sandbox's login shell. */
  command?: string;
  workdir?: string;
}

/** A body for upload: bytes, text, a Blob, or a stream of bytes. */
export type UploadSource =
  | string
  | Uint8Array
  | ArrayBuffer
  | Blob
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array>
  | Iterable<Uint8Array>;

/** An owner's image recipe (docs/environments.md). */
export interface EnvironmentSpec {
  id: string;
  owner_id: string;
  name: string;
  base_image: string;
  python_packages: string[];
  apt_packages: string[];
  python_version?: string;
  created_at: string;
}

export interface EnvironmentSpecInput {
  name: string;
  base_image: string;
  python_packages?: string[];
  apt_packages?: string[];
  python_version?: string;
  /** Default: the client's userId (X-User-ID). */
  owner_id?: string;
}

export interface BuildArtifact {
  target: string;
  ref: string;
  digest: string;
  size: number;
}

export interface EnvironmentBuild {
  id: string;
  spec_id: string;
  owner_id: string;
  status: "queued" | "building" | "ready" | "failed" | "canceled";
  targets: string[];
  image: string;
  /** The log so far (live while the build runs). */
  log: string;
  reason?: string;
  attempts: number;
  artifacts: BuildArtifact[];
  created_at: string;
  updated_at: string;
  started_at?: string;
  finished_at?: string;
}

/** One row of listEnvironmentBuilds. */
export interface EnvironmentBuildEntry {
  build: EnvironmentBuild;
  spec: EnvironmentSpec;
}

/** spawn({ image, provider }) runs the build's image. */
export interface SpawnConfig {
  build_id: string;
  ready: boolean;
  image: string;
  provider: string;
}

/** One line of a followed build log: output, bytes the log's bound dropped,
 * or the last one, the build's status. */
export type BuildLogFrame =
  | { type: "data"; data: string }
  | { type: "skipped"; skipped: number }
  | { type: "status"; status: EnvironmentBuild["status"]; image?: string; reason?: string };
