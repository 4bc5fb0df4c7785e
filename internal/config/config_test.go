package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// fieldErrors returns every *FieldError in err's tree.
func fieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		if fe, ok := e.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

func errorKeys(err error) []string {
	var keys []string
	for _, fe := range fieldErrors(err) {
		keys = append(keys, fe.Key)
	}
	return keys
}

func get(t *testing.T, c *Config, key string) string {
	t.Helper()
	v, err := c.Get(key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return v
}

// isolated returns options that see no file and no environment but what a
// test puts there.
func isolated(t *testing.T) LoadOptions {
	t.Helper()
	return LoadOptions{WorkDir: t.TempDir(), HomeDir: t.TempDir(), Env: []string{}}
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaults(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default() does not validate: %v", err)
	}
	want := map[string]string{
		"server.listen":                "127.0.0.1:7423",
		"server.api_key":               "",
		"server.cors_origins":          "",
		"server.allowed_hosts":         "",
		"server.max_body_bytes":        "1048576",
		"server.max_file_bytes":        "67108864",
		"server.max_upload_bytes":      "10737418240",
		"server.shutdown_timeout":      "30s",
		"server.stream_write_timeout":  "30s",
		"server.memory_budget_bytes":   "1073741824",
		"store.driver":                 "sqlite",
		"store.path":                   "./stacyvm.db",
		"store.dsn":                    "",
		"store.lease_ttl":              "15s",
		"store.retention":              "168h0m0s",
		"log.level":                    "info",
		"log.format":                   "text",
		"sandbox.default_ttl":          "30m0s",
		"sandbox.max_ttl":              "24h0m0s",
		"sandbox.default_exec_timeout": "1m0s",
		"sandbox.max_exec_timeout":     "1h0m0s",
		"sandbox.max_sandboxes":        "100",
		"sandbox.max_per_owner":        "0",
		"sandbox.reaper_interval":      "30s",
		"sandbox.reconcile_interval":   "1m0s",
		"sandbox.legacy_runtimes":      "ignore",
		"sandbox.default_image":        "",
		"sandbox.default_memory_mb":    "512",
		"sandbox.default_vcpus":        "1",
		"sandbox.orphans":              "adopt",
		"sandbox.destroy_timeout":      "1m0s",
		"sandbox.auto_resume":          "true",
		"sandbox.idle_timeout":         "0s",
		"sandbox.on_idle":              "pause",
		"provider.default":             "auto",
		"provider.enabled":             "",
		"mock.dir":                     "",
		"docker.host":                  "",
		"docker.runtime":               "runc",
		"docker.network":               "none",
		"docker.read_only_root":        "false",
		"docker.user":                  "",
		"docker.pids_limit":            "256",
		"docker.agent_path":            "",
		"proot.binary":                 "proot",
		"proot.images_dir":             "",
		"proot.state_dir":              "",
		"proot.max_sandboxes":          "0",
		"custom.url":                   "",
		"custom.api_key":               "",
		"custom.timeout":               "30s",
		"firecracker.binary":           "firecracker",
		"firecracker.kernel":           "",
		"firecracker.state_dir":        "",
		"firecracker.sandboxes_dir":    "",
		"firecracker.jailer":           "",
		"firecracker.pause_to_disk":    "false",
		"kubernetes.kubeconfig":        "",
		"kubernetes.context":           "",
		"kubernetes.namespace":         "stacyvm",
		"kubernetes.runtime_class":     "",
		"kubernetes.node_name":         "",
		"kubernetes.agent_image":       "",
		"kubernetes.pull_policy":       "IfNotPresent",
		"kubernetes.network":           "none",
		"kubernetes.user":              "",
		"kubernetes.ready_timeout":     "2m0s",
		"guest.exec_grace":             "5s",
		"guest.call_timeout":           "5m0s",
		"guest.max_reply_bytes":        "33554432",
		"guest.max_entries":            "100000",
		// Environments.
		"environments.enabled":                "true",
		"environments.pip_index_url":          "",
		"environments.workers":                "1",
		"environments.queue_size":             "16",
		"environments.max_log_bytes":          "1048576",
		"environments.build_timeout":          "30m0s",
		"environments.build_network":          "",
		"environments.registry_address":       "",
		"environments.registry_repository":    "stacyvm/env",
		"environments.registry_username":      "",
		"environments.registry_password":      "",
		"environments.registry_password_file": "",
		"pool.policy":                         "cold",
		"pool.max_age":                        "0s",
		"pool.concurrency":                    "2",
		"pool.check_interval":                 "10s",
		"pool.backoff_max":                    "1m0s",
	}
	if got := Keys(); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
	})) {
		t.Errorf("Keys() = %v, want exactly the keys of this table", got)
	}
	for key, w := range want {
		if got := get(t, c, key); got != w {
			t.Errorf("default %s = %q, want %q", key, got, w)
		}
	}
	if Default() == Default() {
		t.Error("Default returns a shared value")
	}
}

// TestEveryKeyRoundTrips proves the one parser handles every field: each
// value formatted by Get parses back through Set unchanged, after a change
// that Set must also apply.
func TestEveryKeyRoundTrips(t *testing.T) {
	samples := map[reflect.Kind]string{reflect.String: "some-value", reflect.Bool: "true", reflect.Int: "42",
		reflect.Int64: "4242", reflect.Slice: "a,b"}
	seenEnv := map[string]string{}
	for _, f := range fields() {
		t.Run(f.key, func(t *testing.T) {
			if want := EnvPrefix + strings.ToUpper(f.section) + "_" + strings.ToUpper(f.name); f.env != want || EnvName(f.key) != want {
				t.Errorf("env name %q, want %q", f.env, want)
			}
			if other, dup := seenEnv[f.env]; dup {
				t.Errorf("env name %s also names %s", f.env, other)
			}
			seenEnv[f.env] = f.key

			c := Default()
			v := reflect.ValueOf(c).Elem().FieldByIndex(f.index)
			sample := samples[v.Kind()]
			if v.Type() == durationType {
				sample = "1h2m3s"
			}
			if err := c.Set(f.key, sample); err != nil {
				t.Fatalf("Set(%q, %q): %v", f.key, sample, err)
			}
			got := get(t, c, f.key)
			if got != sample {
				t.Errorf("after Set(%q), Get = %q", sample, got)
			}
			d := Default()
			if err := d.Set(f.key, got); err != nil {
				t.Fatalf("Set(Get()): %v", err)
			}
			if !reflect.DeepEqual(c, d) {
				t.Errorf("Set(Get()) does not reproduce the value of %s", f.key)
			}
		})
	}
}

func TestSet(t *testing.T) {
	tests := []struct {
		key, value string
		want       string // Get afterwards; "" with wantErr
		wantErr    bool
	}{
		{"server.listen", "0.0.0.0:9", "0.0.0.0:9", false},
		{"server.api_key", "", "", false}, // explicit empty is applied
		{"server.max_body_bytes", " 2048 ", "2048", false},
		{"server.max_body_bytes", "2k", "", true},
		{"server.max_body_bytes", "9223372036854775808", "", true},
		{"sandbox.max_sandboxes", "1.5", "", true},
		{"sandbox.default_ttl", "1h30m", "1h30m0s", false},
		{"sandbox.default_ttl", "90", "", true}, // a bare number is ambiguous
		{"sandbox.default_ttl", "soon", "", true},
		{"docker.read_only_root", "1", "true", false},
		{"docker.read_only_root", "FALSE", "false", false},
		{"docker.read_only_root", "yes", "", true},
		{"server.cors_origins", "https://a.example, https://b.example,,", "https://a.example,https://b.example", false},
		{"server.cors_origins", "", "", false},
		{"provider.enabled", "docker", "docker", false},
		{"server.nope", "x", "", true},
		{"nope.listen", "x", "", true},
		{"listen", "x", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			c := Default()
			err := c.Set(tc.key, tc.value)
			if tc.wantErr {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want invalid argument", err)
				}
				if keys := errorKeys(err); !slices.Equal(keys, []string{tc.key}) {
					t.Errorf("error names %v, want [%s]: %v", keys, tc.key, err)
				}
				if _, known := lookup(tc.key); known && !reflect.DeepEqual(c, Default()) {
					t.Error("a failed Set changed the config")
				}
				return
			}
			if err != nil {
				t.Fatalf("Set: %v", err)
			}
			if got := get(t, c, tc.key); got != tc.want {
				t.Errorf("Get = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSetListIsEmptyNotNil(t *testing.T) {
	c := Default()
	if err := c.Set("server.cors_origins", " , "); err != nil {
		t.Fatal(err)
	}
	if c.Server.CORSOrigins == nil || len(c.Server.CORSOrigins) != 0 {
		t.Errorf("CORSOrigins = %#v, want an empty list", c.Server.CORSOrigins)
	}
}

func TestUnknownKeyErrorListsKnownKeys(t *testing.T) {
	err := Default().Set("docker.runtme", "runsc")
	if err == nil || !strings.Contains(err.Error(), "docker.runtime") {
		t.Errorf("err = %v, want it to list docker.runtime", err)
	}
	err = Default().Set("dokcer.runtime", "runsc")
	if err == nil || !strings.Contains(err.Error(), "docker") {
		t.Errorf("err = %v, want it to list the sections", err)
	}
}

const fullFile = `# every section
server:
  listen: 0.0.0.0:8080
  api_key: s3cret
  cors_origins: [https://app.example.com, "*"]
  allowed_hosts: [sandbox.example.com]
  max_body_bytes: 2097152
  max_file_bytes: 1024
  max_upload_bytes: 0
  shutdown_timeout: 5s
  stream_write_timeout: 7s
  memory_budget_bytes: 268435456
store:
  driver: sqlite
  path: /var/lib/stacyvm/db.sqlite
  dsn: postgres://stacyvm:pw@db:5432/stacyvm
  lease_ttl: 20s
  retention: 48h
log: {level: debug, format: json}
sandbox:
  default_ttl: 10m
  max_ttl: 2h
  default_exec_timeout: 30s
  max_exec_timeout: 10m
  max_sandboxes: 7
  max_per_owner: 2
  reaper_interval: 1s
  reconcile_interval: 2m
  default_image: stacyvm/debian:test
  default_memory_mb: 256
  default_vcpus: 2
  orphans: destroy
  legacy_runtimes: claim
  destroy_timeout: 20s
  auto_resume: false
  idle_timeout: 10m
  on_idle: destroy
provider:
  default: docker
  enabled:
    - docker
    - proot
mock:
  dir: /tmp/m
docker:
  host: unix:///run/docker.sock
  runtime: runsc
  network: bridge
  read_only_root: true
  user: "1000:1000"
  pids_limit: 64
  agent_path: /usr/local/bin/stacyvm-agent
proot:
  binary: /usr/bin/proot
  images_dir: /srv/images
  state_dir: /srv/state
  max_sandboxes: 3
custom:
  url: https://backend.example.com/api
  api_key: other-secret
  timeout: 1m
firecracker:
  binary: /opt/fc/firecracker
  kernel: /opt/fc/vmlinux
  state_dir: /srv/fc
  sandboxes_dir: /srv/fc-vms
  jailer: /opt/fc/jailer
  pause_to_disk: true
kubernetes:
  kubeconfig: /etc/stacyvm/kubeconfig
  context: prod
  namespace: sandboxes
  runtime_class: gvisor
  node_name: node-1
  agent_image: registry.example.com/stacyvm-agent:1
  pull_policy: Always
  network: bridge
  user: "65534"
  ready_timeout: 90s
guest:
  exec_grace: 2s
  call_timeout: 1m
  max_reply_bytes: 1048576
  max_entries: 500
environments:
  enabled: false
  pip_index_url: http://127.0.0.1:3141/simple/
  workers: 2
  queue_size: 5
  max_log_bytes: 4096
  build_timeout: 10m
  build_network: host
  registry_address: 127.0.0.1:5000
  registry_repository: team/envs
  registry_username: builder
  registry_password: hunter2
  registry_password_file: /run/secrets/registry
pool:
  policy: reject
  max_age: 1h
  concurrency: 3
  check_interval: 5s
  backoff_max: 30s
pools:
  - name: py
    image: stacyvm/debian:test
    provider: docker
    memory_mb: 256
    vcpus: 1
    size: 4
    policy: cold
    max_age: 10m
    concurrency: 2
  - name: small
    size: 1
`

func TestLoadFullFile(t *testing.T) {
	opts := isolated(t)
	opts.File = writeFile(t, filepath.Join(t.TempDir(), "c.yaml"), fullFile)
	c, info, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Config{
		Server: ServerConfig{Listen: "0.0.0.0:8080", APIKey: "s3cret", CORSOrigins: []string{"https://app.example.com", "*"},
			AllowedHosts: []string{"sandbox.example.com"}, MaxBodyBytes: 2 << 20, MaxFileBytes: 1024, MaxUploadBytes: 0, ShutdownTimeout: 5 * time.Second,
			StreamWriteTimeout: 7 * time.Second, MemoryBudgetBytes: 256 << 20},
		Store: StoreConfig{Driver: "sqlite", Path: "/var/lib/stacyvm/db.sqlite", DSN: "postgres://stacyvm:pw@db:5432/stacyvm", LeaseTTL: 20 * time.Second, Retention: 48 * time.Hour},
		Log:   LogConfig{Level: "debug", Format: "json"},
		Sandbox: SandboxConfig{DefaultTTL: 10 * time.Minute, MaxTTL: 2 * time.Hour, DefaultExecTimeout: 30 * time.Second,
			MaxExecTimeout: 10 * time.Minute, MaxSandboxes: 7, MaxPerOwner: 2, ReaperInterval: time.Second, ReconcileInterval: 2 * time.Minute,
			DefaultImage: "stacyvm/debian:test", DefaultMemoryMB: 256, DefaultVCPUs: 2, Orphans: "destroy", LegacyRuntimes: "claim",
			DestroyTimeout: 20 * time.Second, AutoResume: false, IdleTimeout: 10 * time.Minute, OnIdle: "destroy"},
		Provider: ProviderConfig{Default: "docker", Enabled: []string{"docker", "proot"}},
		Mock:     MockConfig{Dir: "/tmp/m"},
		Docker: DockerConfig{Host: "unix:///run/docker.sock", Runtime: "runsc", Network: "bridge", ReadOnlyRoot: true,
			User: "1000:1000", PidsLimit: 64, AgentPath: "/usr/local/bin/stacyvm-agent"},
		Proot:       ProotConfig{Binary: "/usr/bin/proot", ImagesDir: "/srv/images", StateDir: "/srv/state", MaxSandboxes: 3},
		Custom:      CustomConfig{URL: "https://backend.example.com/api", APIKey: "other-secret", Timeout: time.Minute},
		Firecracker: FirecrackerConfig{Binary: "/opt/fc/firecracker", Kernel: "/opt/fc/vmlinux", StateDir: "/srv/fc", SandboxesDir: "/srv/fc-vms", Jailer: "/opt/fc/jailer", PauseToDisk: true},
		Kubernetes: KubernetesConfig{Kubeconfig: "/etc/stacyvm/kubeconfig", Context: "prod", Namespace: "sandboxes", RuntimeClass: "gvisor",
			NodeName: "node-1", AgentImage: "registry.example.com/stacyvm-agent:1", PullPolicy: "Always", Network: "bridge", User: "65534",
			ReadyTimeout: 90 * time.Second},
		Guest: GuestConfig{ExecGrace: 2 * time.Second, CallTimeout: time.Minute, MaxReplyBytes: 1 << 20, MaxEntries: 500},
		Environments: EnvironmentsConfig{PipIndexURL: "http://127.0.0.1:3141/simple/", Workers: 2, QueueSize: 5, MaxLogBytes: 4096,
			BuildTimeout: 10 * time.Minute, BuildNetwork: "host", RegistryAddress: "127.0.0.1:5000", RegistryRepository: "team/envs",
			RegistryUsername: "builder", RegistryPassword: "hunter2", RegistryPasswordFile: "/run/secrets/registry"},
		Pool: PoolConfig{Policy: PoolReject, MaxAge: time.Hour, Concurrency: 3, CheckInterval: 5 * time.Second, BackoffMax: 30 * time.Second},
		Pools: []PoolSpec{
			{Name: "py", Image: "stacyvm/debian:test", Provider: "docker", MemoryMB: 256, VCPUs: 1, Size: 4, Policy: PoolCold, MaxAge: 10 * time.Minute, Concurrency: 2},
			{Name: "small", Size: 1},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("loaded\n %+v\nwant\n %+v", c, want)
	}
	if info.File != opts.File {
		t.Errorf("info.File = %q, want %q", info.File, opts.File)
	}
	if len(info.Sources) != len(Keys())+1 {
		t.Errorf("%d sources recorded, want one per key and one for pools (%d)", len(info.Sources), len(Keys())+1)
	}
	if src := info.Source("docker.runtime"); src != (Source{FromFile, opts.File}) {
		t.Errorf("source of docker.runtime = %v", src)
	}
	if len(info.Warnings) != 0 {
		t.Errorf("warnings: %v", info.Warnings)
	}
}

func TestLoadFileErrors(t *testing.T) {
	tests := []struct {
		name     string
		content  string
		wantKeys []string // FieldErrors expected, in order
		wantText []string // the message must also hold these
	}{
		{"unknown key", "server:\n  listen: 127.0.0.1:1\n  lisen: x\n", []string{"server.lisen"}, []string{"line 3", "server.listen"}},
		{"unknown section", "servr:\n  listen: x\n", []string{"servr"}, []string{"line 1", "sandbox"}},
		{"all unknown keys at once", "server:\n  a: 1\ndocker:\n  b: 2\n", []string{"server.a", "docker.b"}, nil},
		{"wrong type", "server:\n  max_body_bytes: lots\n", []string{"server.max_body_bytes"}, []string{"line 2", "lots"}},
		{"integer duration", "sandbox:\n  default_ttl: 60\n", []string{"sandbox.default_ttl"}, []string{"line 2", "60s"}},
		{"bad duration", "sandbox:\n  default_ttl: 5 minutes\n", []string{"sandbox.default_ttl"}, nil},
		{"list as string", "server:\n  cors_origins: https://a.example\n", []string{"server.cors_origins"}, nil},
		{"section not a mapping", "server: 8080\n", nil, []string{"line 1", "section server must be a mapping"}},
		{"root not a mapping", "- server\n", nil, []string{"want a mapping of sections"}},
		{"duplicate key", "server:\n  listen: a:1\n  listen: b:2\n", nil, []string{"line 3: server.listen is already set at line 2"}},
		{"duplicate section", "log:\n  level: debug\nlog:\n  format: json\n", nil, []string{"line 3: log is already set at line 1"}},
		{"two documents", "server:\n  listen: a:1\n---\nlog:\n  level: debug\n", nil, []string{"more than one YAML document"}},
		{"syntax", "server:\n  listen: [\n", nil, []string{"line"}},
		{"validation", "sandbox:\n  default_ttl: 48h\n", []string{"sandbox.default_ttl"}, []string{"sandbox.max_ttl"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := isolated(t)
			opts.File = writeFile(t, filepath.Join(t.TempDir(), "bad.yaml"), tc.content)
			c, _, err := Load(opts)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", c)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("err %v is not invalid argument", err)
			}
			if keys := errorKeys(err); !slices.Equal(keys, tc.wantKeys) {
				t.Errorf("error names keys %v, want %v: %v", keys, tc.wantKeys, err)
			}
			msg := err.Error()
			if tc.name != "validation" && !strings.Contains(msg, opts.File) {
				t.Errorf("error does not name the file: %v", err)
			}
			for _, s := range tc.wantText {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not mention %q", msg, s)
				}
			}
		})
	}
}

func TestLoadEmptyFiles(t *testing.T) {
	for _, content := range []string{"", "# nothing\n", "---\n", "server:\n", "~\n"} {
		opts := isolated(t)
		opts.File = writeFile(t, filepath.Join(t.TempDir(), "c.yaml"), content)
		c, info, err := Load(opts)
		if err != nil {
			t.Errorf("Load(%q): %v", content, err)
			continue
		}
		if !reflect.DeepEqual(c, Default()) || len(info.Sources) != 0 {
			t.Errorf("Load(%q) changed the defaults: %+v, sources %v", content, c, info.Sources)
		}
	}
}

func TestFileSearchOrder(t *testing.T) {
	listenFile := func(port string) string { return "server:\n  listen: 127.0.0.1:" + port + "\n" }
	tests := []struct {
		name               string
		explicit, local    bool
		user               bool
		wantPort, wantFile string // wantFile: explicit, local, user or ""
	}{
		{"nothing", false, false, false, "7423", ""},
		{"user only", false, false, true, "3", "user"},
		{"local beats user", false, true, true, "2", "local"},
		{"explicit beats all", true, true, true, "1", "explicit"},
		{"explicit alone", true, false, false, "1", "explicit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := isolated(t)
			files := map[string]string{
				"explicit": filepath.Join(t.TempDir(), "explicit.yaml"),
				"local":    filepath.Join(opts.WorkDir, LocalFile),
				"user":     filepath.Join(opts.HomeDir, UserFile),
			}
			if tc.explicit {
				opts.File = writeFile(t, files["explicit"], listenFile("1"))
			}
			if tc.local {
				writeFile(t, files["local"], listenFile("2"))
			}
			if tc.user {
				writeFile(t, files["user"], listenFile("3"))
			}
			c, info, err := Load(opts)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.Server.Listen != "127.0.0.1:"+tc.wantPort {
				t.Errorf("listen = %s, want port %s", c.Server.Listen, tc.wantPort)
			}
			if want := files[tc.wantFile]; info.File != want {
				t.Errorf("info.File = %q, want %q", info.File, want)
			}
		})
	}
}

func TestFileLookupErrors(t *testing.T) {
	t.Run("explicit file missing", func(t *testing.T) {
		opts := isolated(t)
		writeFile(t, filepath.Join(opts.WorkDir, LocalFile), "") // must not be used instead
		opts.File = filepath.Join(t.TempDir(), "missing.yaml")
		_, _, err := Load(opts)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), opts.File) {
			t.Errorf("err = %v, want an invalid-argument not-exist error naming the file", err)
		}
	})
	t.Run("explicit file is a directory", func(t *testing.T) {
		opts := isolated(t)
		opts.File = t.TempDir()
		if _, _, err := Load(opts); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("err = %v, want invalid argument", err)
		}
	})
	t.Run("default location is a directory", func(t *testing.T) {
		opts := isolated(t)
		if err := os.Mkdir(filepath.Join(opts.WorkDir, LocalFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, _, err := Load(opts); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("err = %v, want invalid argument", err)
		}
	})
}

func TestLoadEnv(t *testing.T) {
	tests := []struct {
		name         string
		env          []string
		want         map[string]string // key → Get
		wantWarnings []string          // substrings, one per warning
		wantErrKeys  []string
		wantErrText  string
	}{
		{
			name: "each type",
			env: []string{"STACYVM_SERVER_LISTEN=127.0.0.1:9000", "STACYVM_SANDBOX_DEFAULT_TTL=5m",
				"STACYVM_DOCKER_RUNTIME=runsc", "STACYVM_DOCKER_READ_ONLY_ROOT=true", "STACYVM_SANDBOX_MAX_SANDBOXES=3",
				"STACYVM_DOCKER_PIDS_LIMIT=99", "STACYVM_PROVIDER_ENABLED=docker,mock", "PATH=/bin"},
			want: map[string]string{"server.listen": "127.0.0.1:9000", "sandbox.default_ttl": "5m0s",
				"docker.runtime": "runsc", "docker.read_only_root": "true", "sandbox.max_sandboxes": "3",
				"docker.pids_limit": "99", "provider.enabled": "docker,mock"},
		},
		{
			name:         "unknown variables warn",
			env:          []string{"STACYVM_SANDBOX_TTL=5m", "STACYVM_BOGUS=1", "STACYVM_LOG_LEVEL=debug"},
			want:         map[string]string{"log.level": "debug"},
			wantWarnings: []string{"STACYVM_BOGUS", "STACYVM_SANDBOX_TTL"},
		},
		{
			name: "client variables do not warn",
			env:  []string{"STACYVM_SERVER=http://localhost:7423", "STACYVM_API_KEY=k"},
			want: map[string]string{"server.api_key": ""},
		},
		{
			name: "empty value is unset",
			env:  []string{"STACYVM_SERVER_LISTEN=", "STACYVM_SERVER_API_KEY="},
			want: map[string]string{"server.listen": "127.0.0.1:7423"},
		},
		{
			name: "last duplicate wins",
			env:  []string{"STACYVM_LOG_FORMAT=text", "STACYVM_LOG_FORMAT=json"},
			want: map[string]string{"log.format": "json"},
		},
		{
			name: "lower case is not ours",
			env:  []string{"stacyvm_log_level=debug"},
			want: map[string]string{"log.level": "info"},
		},
		{
			name:        "unparseable values, all reported",
			env:         []string{"STACYVM_SANDBOX_DEFAULT_TTL=forever", "STACYVM_DOCKER_PIDS_LIMIT=many"},
			wantErrKeys: []string{"docker.pids_limit", "sandbox.default_ttl"},
			wantErrText: "environment variable STACYVM_SANDBOX_DEFAULT_TTL",
		},
		{
			name:        "invalid value",
			env:         []string{"STACYVM_SANDBOX_ORPHANS=keep"},
			wantErrKeys: []string{"sandbox.orphans"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := isolated(t)
			opts.Env = tc.env
			c, info, err := Load(opts)
			if tc.wantErrKeys != nil {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want invalid argument", err)
				}
				if keys := errorKeys(err); !slices.Equal(keys, tc.wantErrKeys) {
					t.Errorf("error names %v, want %v: %v", keys, tc.wantErrKeys, err)
				}
				if !strings.Contains(err.Error(), tc.wantErrText) {
					t.Errorf("error %q does not mention %q", err, tc.wantErrText)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			for k, w := range tc.want {
				if got := get(t, c, k); got != w {
					t.Errorf("%s = %q, want %q", k, got, w)
				}
			}
			if len(info.Warnings) != len(tc.wantWarnings) {
				t.Fatalf("warnings %q, want %d", info.Warnings, len(tc.wantWarnings))
			}
			for i, w := range tc.wantWarnings {
				if !strings.Contains(info.Warnings[i], w) {
					t.Errorf("warning %q does not mention %s", info.Warnings[i], w)
				}
			}
		})
	}
}

func TestLoadReadsProcessEnvironment(t *testing.T) {
	t.Setenv("STACYVM_LOG_LEVEL", "warn")
	opts := isolated(t)
	opts.Env = nil
	c, info, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Log.Level != "warn" || info.Source("log.level") != (Source{FromEnv, "STACYVM_LOG_LEVEL"}) {
		t.Errorf("log.level = %q from %v, want warn from the environment", c.Log.Level, info.Source("log.level"))
	}
}

func TestPrecedence(t *testing.T) {
	opts := isolated(t)
	writeFile(t, filepath.Join(opts.WorkDir, LocalFile), `
server:
  listen: 127.0.0.1:1001
  max_body_bytes: 111
sandbox:
  default_ttl: 1m
  max_ttl: 2h
log:
  level: debug
`)
	opts.Env = []string{"STACYVM_SERVER_LISTEN=127.0.0.1:1002", "STACYVM_SANDBOX_DEFAULT_TTL=2m", "STACYVM_LOG_FORMAT=json"}
	opts.Overrides = map[string]string{"server.listen": "127.0.0.1:1003", "sandbox.max_ttl": "3h"}
	c, info, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	file := filepath.Join(opts.WorkDir, LocalFile)
	tests := []struct {
		key, want string
		src       Source
	}{
		{"server.listen", "127.0.0.1:1003", Source{Kind: FromOverride}},
		{"server.max_body_bytes", "111", Source{FromFile, file}},
		{"sandbox.default_ttl", "2m0s", Source{FromEnv, "STACYVM_SANDBOX_DEFAULT_TTL"}},
		{"sandbox.max_ttl", "3h0m0s", Source{Kind: FromOverride}},
		{"log.level", "debug", Source{FromFile, file}},
		{"log.format", "json", Source{FromEnv, "STACYVM_LOG_FORMAT"}},
		{"store.path", "./stacyvm.db", Source{}},
	}
	for _, tc := range tests {
		if got := get(t, c, tc.key); got != tc.want {
			t.Errorf("%s = %q, want %q", tc.key, got, tc.want)
		}
		if got := info.Source(tc.key); got != tc.src {
			t.Errorf("source of %s = %v, want %v", tc.key, got, tc.src)
		}
	}
}

func TestOverrideErrors(t *testing.T) {
	opts := isolated(t)
	opts.Overrides = map[string]string{"server.nope": "1", "sandbox.max_ttl": "long"}
	_, _, err := Load(opts)
	if keys := errorKeys(err); !slices.Equal(keys, []string{"sandbox.max_ttl", "server.nope"}) {
		t.Errorf("error names %v: %v", keys, err)
	}
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("err %v is not invalid argument", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		set  map[string]string
		key  string // the key the single error must name; "" for valid
	}{
		{"listen without port", map[string]string{"server.listen": "127.0.0.1"}, "server.listen"},
		{"listen port out of range", map[string]string{"server.listen": "127.0.0.1:70000"}, "server.listen"},
		{"listen named port", map[string]string{"server.listen": "127.0.0.1:http"}, "server.listen"},
		{"listen all interfaces", map[string]string{"server.listen": ":7423"}, ""},
		{"listen ipv6", map[string]string{"server.listen": "[::1]:7423"}, ""},
		{"listen hostname", map[string]string{"server.listen": "localhost:0"}, ""},
		{"cors wildcard", map[string]string{"server.cors_origins": "*,http://localhost:3000"}, ""},
		{"cors with path", map[string]string{"server.cors_origins": "https://a.example/app"}, "server.cors_origins"},
		{"cors without scheme", map[string]string{"server.cors_origins": "a.example"}, "server.cors_origins"},
		{"allowed hosts", map[string]string{"server.allowed_hosts": "*,sandbox.example.com,localhost:8080,[::1]:9000,10.0.0.5,::1"}, ""},
		{"allowed host as origin", map[string]string{"server.allowed_hosts": "https://a.example"}, "server.allowed_hosts"},
		{"allowed host bad port", map[string]string{"server.allowed_hosts": "a.example:http"}, "server.allowed_hosts"},
		{"allowed host pattern", map[string]string{"server.allowed_hosts": "*.example.com"}, "server.allowed_hosts"},
		{"zero body limit", map[string]string{"server.max_body_bytes": "0"}, "server.max_body_bytes"},
		{"negative file limit", map[string]string{"server.max_file_bytes": "-1"}, "server.max_file_bytes"},
		{"negative upload limit", map[string]string{"server.max_upload_bytes": "-1"}, "server.max_upload_bytes"},
		{"upload limit set", map[string]string{"server.max_upload_bytes": "1073741824"}, ""},
		{"budget below two JSON files", map[string]string{"server.memory_budget_bytes": "1000"}, "server.memory_budget_bytes"},
		{"no budget", map[string]string{"server.memory_budget_bytes": "0"}, ""},
		{"zero exec grace", map[string]string{"guest.exec_grace": "0s"}, "guest.exec_grace"},
		{"zero reply cap", map[string]string{"guest.max_reply_bytes": "0"}, "guest.max_reply_bytes"},
		{"zero shutdown timeout", map[string]string{"server.shutdown_timeout": "0s"}, "server.shutdown_timeout"},
		{"empty store path", map[string]string{"store.path": ""}, "store.path"},
		{"store driver", map[string]string{"store.driver": "mysql"}, "store.driver"},
		{"zero lease ttl", map[string]string{"store.lease_ttl": "0s"}, "store.lease_ttl"},
		{"postgres without dsn", map[string]string{"store.driver": "postgres"}, "store.dsn"},
		{"postgres needs no path", map[string]string{"store.driver": "postgres", "store.path": "", "store.dsn": "postgres://u:p@db/x"}, ""},
		{"dsn ignored by sqlite", map[string]string{"store.dsn": "postgres://u:p@db/x"}, ""},
		{"log level", map[string]string{"log.level": "verbose"}, "log.level"},
		{"log level any case", map[string]string{"log.level": "WARN"}, ""},
		{"log format", map[string]string{"log.format": "xml"}, "log.format"},
		{"negative ttl", map[string]string{"sandbox.default_ttl": "-1m"}, "sandbox.default_ttl"},
		{"zero max ttl", map[string]string{"sandbox.max_ttl": "0s"}, "sandbox.max_ttl"},
		{"default ttl above max", map[string]string{"sandbox.default_ttl": "25h"}, "sandbox.default_ttl"},
		{"default ttl equal to max", map[string]string{"sandbox.default_ttl": "24h"}, ""},
		{"zero exec timeout", map[string]string{"sandbox.default_exec_timeout": "0s"}, "sandbox.default_exec_timeout"},
		{"exec timeout above max", map[string]string{"sandbox.default_exec_timeout": "2h"}, "sandbox.default_exec_timeout"},
		{"zero max exec timeout", map[string]string{"sandbox.max_exec_timeout": "0s"}, "sandbox.max_exec_timeout"},
		{"zero max sandboxes", map[string]string{"sandbox.max_sandboxes": "0"}, "sandbox.max_sandboxes"},
		{"negative per owner", map[string]string{"sandbox.max_per_owner": "-1"}, "sandbox.max_per_owner"},
		{"zero reaper interval", map[string]string{"sandbox.reaper_interval": "0s"}, "sandbox.reaper_interval"},
		{"zero memory", map[string]string{"sandbox.default_memory_mb": "0"}, "sandbox.default_memory_mb"},
		{"zero vcpus", map[string]string{"sandbox.default_vcpus": "0"}, "sandbox.default_vcpus"},
		{"orphans", map[string]string{"sandbox.orphans": "ignore"}, "sandbox.orphans"},
		{"unknown default provider", map[string]string{"provider.default": "qemu"}, "provider.default"},
		{"unknown enabled provider", map[string]string{"provider.enabled": "docker,qemu"}, "provider.enabled"},
		{"duplicate enabled provider", map[string]string{"provider.enabled": "docker,docker"}, "provider.enabled"},
		{"default not enabled", map[string]string{"provider.default": "proot", "provider.enabled": "docker"}, "provider.default"},
		{"default enabled", map[string]string{"provider.default": "proot", "provider.enabled": "docker,proot"}, ""},
		{"auto with enabled", map[string]string{"provider.enabled": "mock"}, ""},
		{"docker host tcp", map[string]string{"docker.host": "tcp://10.0.0.1:2376"}, ""},
		{"docker host bare", map[string]string{"docker.host": "10.0.0.1:2376"}, "docker.host"},
		{"docker host unix without path", map[string]string{"docker.host": "unix://"}, "docker.host"},
		{"empty runtime", map[string]string{"docker.runtime": ""}, "docker.runtime"},
		{"runtime with space", map[string]string{"docker.runtime": "run sc"}, "docker.runtime"},
		{"empty network", map[string]string{"docker.network": ""}, "docker.network"},
		{"user and group", map[string]string{"docker.user": "1000:1000"}, ""},
		{"user with shell", map[string]string{"docker.user": "root;rm"}, "docker.user"},
		{"negative pids limit", map[string]string{"docker.pids_limit": "-1"}, "docker.pids_limit"},
		{"relative agent path", map[string]string{"docker.agent_path": "bin/agent"}, "docker.agent_path"},
		{"empty proot binary", map[string]string{"proot.binary": ""}, "proot.binary"},
		{"negative proot max", map[string]string{"proot.max_sandboxes": "-2"}, "proot.max_sandboxes"},
		{"custom url scheme", map[string]string{"custom.url": "ftp://backend"}, "custom.url"},
		{"custom url without host", map[string]string{"custom.url": "http://"}, "custom.url"},
		{"custom url", map[string]string{"custom.url": "http://127.0.0.1:9000/v1"}, ""},
		{"pip index scheme", map[string]string{"environments.pip_index_url": "file:///srv/wheels"}, "environments.pip_index_url"},
		{"pip index with space", map[string]string{"environments.pip_index_url": "http://x/simple --trusted-host evil"}, "environments.pip_index_url"},
		{"pip index", map[string]string{"environments.pip_index_url": "http://127.0.0.1:3141/simple/"}, ""},
		{"no build workers", map[string]string{"environments.workers": "0"}, "environments.workers"},
		{"no build queue", map[string]string{"environments.queue_size": "0"}, "environments.queue_size"},
		{"build network", map[string]string{"environments.build_network": "host;id"}, "environments.build_network"},
		{"registry with scheme", map[string]string{"environments.registry_address": "https://r.example"}, "environments.registry_address"},
		{"registry", map[string]string{"environments.registry_address": "127.0.0.1:5000"}, ""},
		{"registry repository", map[string]string{"environments.registry_repository": "Team/Envs"}, "environments.registry_repository"},
		{"zero custom timeout", map[string]string{"custom.timeout": "0s"}, "custom.timeout"},
		{"empty firecracker binary", map[string]string{"firecracker.binary": ""}, "firecracker.binary"},
		{"kubernetes namespace with capitals", map[string]string{"kubernetes.namespace": "Sandboxes"}, "kubernetes.namespace"},
		{"kubernetes pull policy", map[string]string{"kubernetes.pull_policy": "missing"}, "kubernetes.pull_policy"},
		{"kubernetes network", map[string]string{"kubernetes.network": "host"}, "kubernetes.network"},
		{"kubernetes user by name", map[string]string{"kubernetes.user": "nobody"}, "kubernetes.user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			for k, v := range tc.set {
				if err := c.Set(k, v); err != nil {
					t.Fatalf("Set(%s, %s): %v", k, v, err)
				}
			}
			err := c.Validate()
			if tc.key == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err = %v, want invalid argument", err)
			}
			if keys := errorKeys(err); !slices.Equal(keys, []string{tc.key}) {
				t.Errorf("error names %v, want [%s]: %v", keys, tc.key, err)
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Errorf("message %q does not name %s", err, tc.key)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Default()
	c.Server.Listen = "nowhere"
	c.Sandbox.MaxTTL = 0
	c.Docker.Runtime = ""
	c.Log.Format = "xml"
	err := c.Validate()
	want := []string{"server.listen", "log.format", "sandbox.max_ttl", "docker.runtime"}
	if keys := errorKeys(err); !slices.Equal(keys, want) {
		t.Errorf("error names %v, want %v", keys, want)
	}
	if errdefs.Classify(err) != errdefs.ErrInvalidArgument {
		t.Errorf("class %v, want invalid argument", errdefs.Classify(err))
	}
}

func TestOpenAPIWarning(t *testing.T) {
	tests := []struct {
		listen, key string
		warn        bool
	}{
		{"127.0.0.1:7423", "", false},
		{"[::1]:7423", "", false},
		{"localhost:7423", "", false},
		{"0.0.0.0:7423", "", true},
		{":7423", "", true},
		{"192.168.1.5:7423", "", true},
		{"0.0.0.0:7423", "k", false},
	}
	for _, tc := range tests {
		opts := isolated(t)
		opts.Overrides = map[string]string{"server.listen": tc.listen, "server.api_key": tc.key}
		_, info, err := Load(opts)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		warned := slices.ContainsFunc(info.Warnings, func(w string) bool { return strings.Contains(w, "server.api_key") })
		if warned != tc.warn {
			t.Errorf("listen %s, key %q: warned %v, want %v (%q)", tc.listen, tc.key, warned, tc.warn, info.Warnings)
		}
	}
}

func TestRedacted(t *testing.T) {
	c := Default()
	c.Server.APIKey, c.Custom.APIKey = "top-secret", ""
	c.Server.CORSOrigins = []string{"*"}
	r := c.Redacted()
	if r.Server.APIKey != "***" {
		t.Errorf("server.api_key redacted to %q", r.Server.APIKey)
	}
	if r.Custom.APIKey != "" {
		t.Errorf("an unset secret became %q; it should stay visibly unset", r.Custom.APIKey)
	}
	if c.Server.APIKey != "top-secret" {
		t.Error("Redacted changed the original")
	}
	r.Server.CORSOrigins[0] = "changed"
	if c.Server.CORSOrigins[0] != "*" {
		t.Error("Redacted shares slices with the original")
	}
	c.Store.DSN = "postgres://u:pw@db/x"
	if r := c.Redacted(); r.Store.DSN != "***" {
		t.Errorf("store.dsn redacted to %q", r.Store.DSN)
	}
	for _, f := range fields() {
		if (strings.HasSuffix(f.name, "api_key") || f.key == "store.dsn") && !f.secret {
			t.Errorf("%s is not marked secret", f.key)
		}
	}
}

func TestPrint(t *testing.T) {
	opts := isolated(t)
	opts.Env = []string{"STACYVM_CUSTOM_API_KEY=backend-secret", "STACYVM_SANDBOX_DEFAULT_TTL=5m",
		"STACYVM_STORE_DSN=postgres://stacyvm:db-secret@db:5432/stacyvm"}
	opts.Overrides = map[string]string{"server.api_key": "front-secret"}
	c, info, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	var buf bytes.Buffer
	if err := c.Print(&buf, info); err != nil {
		t.Fatalf("Print: %v", err)
	}
	out := buf.String()
	for _, secret := range []string{"backend-secret", "front-secret", "db-secret"} {
		if strings.Contains(out, secret) {
			t.Errorf("printed config leaks %q:\n%s", secret, out)
		}
	}
	for _, line := range []string{
		`api_key: '***' # override`,
		`api_key: '***' # env STACYVM_CUSTOM_API_KEY`,
		`dsn: '***' # env STACYVM_STORE_DSN`,
		`default_ttl: 5m0s # env STACYVM_SANDBOX_DEFAULT_TTL`,
		`listen: 127.0.0.1:7423` + "\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("printed config lacks %q:\n%s", line, out)
		}
	}

	// What Print writes is a config file Load accepts, secrets aside.
	opts = isolated(t)
	opts.File = writeFile(t, filepath.Join(t.TempDir(), "printed.yaml"), out)
	again, _, err := Load(opts)
	if err != nil {
		t.Fatalf("Load of printed config: %v", err)
	}
	want := c.Redacted()
	for _, key := range Keys() {
		if g, w := get(t, again, key), get(t, want, key); g != w {
			t.Errorf("printed config loads %s as %q, want %q", key, g, w)
		}
	}
}

func TestSlogLevel(t *testing.T) {
	for level, want := range map[string]string{"debug": "DEBUG", "info": "INFO", "WARN": "WARN", "error": "ERROR"} {
		if got := (LogConfig{Level: level}).SlogLevel().String(); got != want {
			t.Errorf("SlogLevel(%q) = %s, want %s", level, got, want)
		}
	}
}

func TestPoolsInvalid(t *testing.T) {
	cases := []struct {
		name, file, want string
	}{
		{"unknown key", "pools:\n  - {name: a, size: 1, sise: 2}\n", "pools[0].sise: unknown key"},
		{"not a list", "pools: {name: a}\n", "pools must be a list"},
		{"item not a mapping", "pools:\n  - a\n", "pools[0]: must be a mapping"},
		{"age without unit", "pools:\n  - {name: a, size: 1, max_age: 60}\n", "has no unit"},
		{"no name", "sandbox: {default_image: x}\npools:\n  - {size: 1}\n", "pools[0].name"},
		{"duplicate", "sandbox: {default_image: x}\npools:\n  - {name: a, size: 1}\n  - {name: a, size: 2}\n", "also the name of pools[0]"},
		{"no image", "pools:\n  - {name: a, size: 1}\n", "sandbox.default_image is not set"},
		{"size zero", "sandbox: {default_image: x}\npools:\n  - {name: a}\n", "size: 0 is not from 1"},
		{"bad policy", "sandbox: {default_image: x}\npools:\n  - {name: a, size: 1, policy: wait}\n", "policy"},
		{"bad provider", "sandbox: {default_image: x}\npools:\n  - {name: a, size: 1, provider: lxc}\n", "provider"},
		{"negative memory", "sandbox: {default_image: x}\npools:\n  - {name: a, size: 1, memory_mb: -1}\n", "memory_mb"},
		{"global policy", "pool: {policy: sometimes}\n", "pool.policy"},
		{"global concurrency", "pool: {concurrency: 0}\n", "pool.concurrency"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := isolated(t)
			opts.File = writeFile(t, filepath.Join(t.TempDir(), "c.yaml"), tc.file)
			_, _, err := Load(opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want an error containing %q", err, tc.want)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error is not invalid argument: %v", err)
			}
		})
	}
}
