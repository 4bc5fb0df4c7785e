package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// dockerName matches runtime and network names as Docker accepts them.
var dockerName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// dockerUser matches user[:group], by name or numeric ID.
var dockerUser = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$`)

// registryAddress is host[:port] of a registry; registryRepo a repository
// path in it.
var (
	registryAddress = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$`)
	registryRepo    = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$`)
)

// Kubernetes names: namespaces are DNS labels, nodes and RuntimeClasses
// DNS subdomains; users are numeric (runAsUser takes no names).
var (
	kubeLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	kubeSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	kubeUser      = regexp.MustCompile(`^[0-9]+(:[0-9]+)?$`)
)

// Validate checks every setting and returns all problems at once, joined;
// each is a *FieldError naming its key, and the whole is classified
// errdefs.ErrInvalidArgument.
func (c *Config) Validate() error {
	var v validator

	s := c.Server
	v.check(validListen(s.Listen), "server.listen", "%q is not host:port with a port from 0 to 65535", s.Listen)
	for _, o := range s.CORSOrigins {
		v.check(validOrigin(o), "server.cors_origins", "%q is neither * nor an origin like https://app.example.com", o)
	}
	for _, h := range s.AllowedHosts {
		v.check(validAllowedHost(h), "server.allowed_hosts", "%q is neither * nor a host name or host:port like sandbox.example.com", h)
	}
	v.positive("server.max_body_bytes", s.MaxBodyBytes)
	v.positive("server.max_file_bytes", s.MaxFileBytes)
	v.notNegative("server.max_upload_bytes", s.MaxUploadBytes)
	v.positiveDuration("server.shutdown_timeout", s.ShutdownTimeout)
	v.positiveDuration("server.stream_write_timeout", s.StreamWriteTimeout)
	v.notNegative("server.memory_budget_bytes", s.MemoryBudgetBytes)
	if s.MemoryBudgetBytes > 0 && s.MaxFileBytes > 0 {
		// A JSON file write holds its body twice (as read, as decoded).
		v.check(s.MemoryBudgetBytes >= 2*s.MaxFileBytes, "server.memory_budget_bytes",
			"%d is less than twice server.max_file_bytes (%d): the largest JSON file write could never run", s.MemoryBudgetBytes, s.MaxFileBytes)
	}

	v.oneOf("store.driver", c.Store.Driver, StoreSQLite, StorePostgres)
	v.positiveDuration("store.lease_ttl", c.Store.LeaseTTL)
	switch c.Store.Driver {
	case StoreSQLite:
		v.check(c.Store.Path != "", "store.path", "is empty")
	case StorePostgres:
		// The value itself is never quoted: it may hold a password.
		v.check(c.Store.DSN != "", "store.dsn", "is empty: store.driver postgres needs a connection string such as postgres://user:password@host:5432/db")
	}
	v.positiveDuration("store.retention", c.Store.Retention)

	v.oneOf("log.level", strings.ToLower(c.Log.Level), "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")

	sb := c.Sandbox
	v.positiveDuration("sandbox.default_ttl", sb.DefaultTTL)
	v.positiveDuration("sandbox.max_ttl", sb.MaxTTL)
	if sb.DefaultTTL > 0 && sb.MaxTTL > 0 {
		v.check(sb.DefaultTTL <= sb.MaxTTL, "sandbox.default_ttl", "%s exceeds sandbox.max_ttl %s", sb.DefaultTTL, sb.MaxTTL)
	}
	v.positiveDuration("sandbox.default_exec_timeout", sb.DefaultExecTimeout)
	v.positiveDuration("sandbox.max_exec_timeout", sb.MaxExecTimeout)
	if sb.DefaultExecTimeout > 0 && sb.MaxExecTimeout > 0 {
		v.check(sb.DefaultExecTimeout <= sb.MaxExecTimeout, "sandbox.default_exec_timeout",
			"%s exceeds sandbox.max_exec_timeout %s", sb.DefaultExecTimeout, sb.MaxExecTimeout)
	}
	v.positive("sandbox.max_sandboxes", int64(sb.MaxSandboxes))
	v.notNegative("sandbox.max_per_owner", int64(sb.MaxPerOwner))
	v.positiveDuration("sandbox.reaper_interval", sb.ReaperInterval)
	v.positiveDuration("sandbox.reconcile_interval", sb.ReconcileInterval)
	v.positive("sandbox.default_memory_mb", int64(sb.DefaultMemoryMB))
	v.positive("sandbox.default_vcpus", int64(sb.DefaultVCPUs))
	v.oneOf("sandbox.orphans", sb.Orphans, OrphansAdopt, OrphansDestroy)
	v.oneOf("sandbox.legacy_runtimes", sb.LegacyRuntimes, LegacyIgnore, LegacyClaim)
	v.positiveDuration("sandbox.destroy_timeout", sb.DestroyTimeout)
	v.check(sb.IdleTimeout >= 0, "sandbox.idle_timeout", "must not be negative, not %s", sb.IdleTimeout)
	v.oneOf("sandbox.on_idle", sb.OnIdle, OnIdlePause, OnIdleDestroy)

	p := c.Provider
	v.oneOf("provider.default", p.Default, append([]string{ProviderAuto}, ProviderNames...)...)
	for i, name := range p.Enabled {
		v.oneOf("provider.enabled", name, ProviderNames...)
		v.check(!slices.Contains(p.Enabled[:i], name), "provider.enabled", "lists %s twice", name)
	}
	if len(p.Enabled) > 0 && p.Default != ProviderAuto && slices.Contains(ProviderNames, p.Default) {
		v.check(slices.Contains(p.Enabled, p.Default), "provider.default", "%s is not in provider.enabled", p.Default)
	}

	g := c.Guest
	v.positiveDuration("guest.exec_grace", g.ExecGrace)
	v.positiveDuration("guest.call_timeout", g.CallTimeout)
	v.positive("guest.max_reply_bytes", g.MaxReplyBytes)
	v.positive("guest.max_entries", int64(g.MaxEntries))

	d := c.Docker
	v.check(d.Host == "" || validURL(d.Host, "unix", "tcp", "ssh", "npipe", "http", "https"), "docker.host",
		"%q is not a daemon address like unix:///var/run/docker.sock or tcp://host:2376", d.Host)
	v.check(dockerName.MatchString(d.Runtime), "docker.runtime", "%q is not a runtime name (runc, crun, runsc…)", d.Runtime)
	v.check(dockerName.MatchString(d.Network), "docker.network", "%q is not a network name (none, bridge…)", d.Network)
	v.check(d.User == "" || dockerUser.MatchString(d.User), "docker.user", "%q is not user[:group]", d.User)
	v.notNegative("docker.pids_limit", d.PidsLimit)
	v.check(d.AgentPath == "" || filepath.IsAbs(d.AgentPath), "docker.agent_path", "%q is not an absolute path", d.AgentPath)

	v.check(c.Proot.Binary != "", "proot.binary", "is empty")
	v.notNegative("proot.max_sandboxes", int64(c.Proot.MaxSandboxes))

	v.check(c.Custom.URL == "" || validURL(c.Custom.URL, "http", "https"), "custom.url", "%q is not an http or https URL", c.Custom.URL)
	v.positiveDuration("custom.timeout", c.Custom.Timeout)

	v.check(c.Firecracker.Binary != "", "firecracker.binary", "is empty")

	e := c.Environments
	v.check(e.PipIndexURL == "" || (validURL(e.PipIndexURL, "http", "https") && !strings.ContainsAny(e.PipIndexURL, " \t\r\n")),
		"environments.pip_index_url", "%q is not an http or https URL", e.PipIndexURL)
	v.positive("environments.workers", int64(e.Workers))
	v.positive("environments.queue_size", int64(e.QueueSize))
	v.positive("environments.max_log_bytes", int64(e.MaxLogBytes))
	v.positiveDuration("environments.build_timeout", e.BuildTimeout)
	v.check(e.BuildNetwork == "" || dockerName.MatchString(e.BuildNetwork), "environments.build_network",
		"%q is not a network name (host, bridge…)", e.BuildNetwork)
	v.check(e.RegistryAddress == "" || registryAddress.MatchString(e.RegistryAddress), "environments.registry_address",
		"%q is not host[:port]", e.RegistryAddress)
	v.check(registryRepo.MatchString(e.RegistryRepository), "environments.registry_repository",
		"%q is not a repository path (lower case, / separated)", e.RegistryRepository)

	v.validatePools(c)

	k := c.Kubernetes
	v.check(kubeLabel.MatchString(k.Namespace) && len(k.Namespace) <= 63, "kubernetes.namespace", "%q is not a namespace name (a DNS label)", k.Namespace)
	v.check(k.RuntimeClass == "" || kubeSubdomain.MatchString(k.RuntimeClass), "kubernetes.runtime_class", "%q is not a RuntimeClass name", k.RuntimeClass)
	v.check(k.NodeName == "" || kubeSubdomain.MatchString(k.NodeName), "kubernetes.node_name", "%q is not a node name", k.NodeName)
	v.oneOf("kubernetes.pull_policy", k.PullPolicy, "IfNotPresent", "Always", "Never")
	v.oneOf("kubernetes.network", k.Network, "none", "bridge")
	v.check(k.User == "" || kubeUser.MatchString(k.User), "kubernetes.user", "%q is not a numeric uid[:gid]", k.User)
	v.positiveDuration("kubernetes.ready_timeout", k.ReadyTimeout)

	if len(v.errs) == 0 {
		return nil
	}
	return errdefs.Wrap(errdefs.ErrInvalidArgument, errors.Join(v.errs...), "invalid configuration")
}

// poolName is what a configured pool may be called: the API reports pools
// by name, and template pools are called "template:<name>".
var poolName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$`)

// MaxPoolSize bounds one pool, far above what one host keeps warm.
const MaxPoolSize = 1000

func (v *validator) validatePools(c *Config) {
	pc := c.Pool
	v.oneOf("pool.policy", pc.Policy, PoolCold, PoolReject)
	v.notNegative("pool.max_age", int64(pc.MaxAge))
	v.positive("pool.concurrency", int64(pc.Concurrency))
	v.positiveDuration("pool.check_interval", pc.CheckInterval)
	v.positiveDuration("pool.backoff_max", pc.BackoffMax)
	seen := map[string]int{}
	for i, p := range c.Pools {
		key := fmt.Sprintf("pools[%d]", i)
		if p.Name != "" {
			key = fmt.Sprintf("pools[%d] (%s)", i, p.Name)
		}
		v.check(poolName.MatchString(p.Name), key+".name", "%q must start with a letter or digit and hold only letters, digits, '.', '_' and '-' (at most 128)", p.Name)
		if j, dup := seen[p.Name]; dup && p.Name != "" {
			v.check(false, key+".name", "%q is also the name of pools[%d]", p.Name, j)
		}
		seen[p.Name] = i
		v.check(p.Image != "" || c.Sandbox.DefaultImage != "", key+".image", "is empty and sandbox.default_image is not set")
		if p.Provider != "" {
			v.oneOf(key+".provider", p.Provider, append([]string{ProviderAuto}, ProviderNames...)...)
		}
		v.notNegative(key+".memory_mb", int64(p.MemoryMB))
		v.notNegative(key+".vcpus", int64(p.VCPUs))
		v.check(p.Size >= 1 && p.Size <= MaxPoolSize, key+".size", "%d is not from 1 to %d", p.Size, MaxPoolSize)
		if p.Policy != "" {
			v.oneOf(key+".policy", p.Policy, PoolCold, PoolReject)
		}
		v.notNegative(key+".max_age", int64(p.MaxAge))
		v.notNegative(key+".concurrency", int64(p.Concurrency))
	}
}

type validator struct{ errs []error }

func (v *validator) check(ok bool, key, format string, args ...any) {
	if !ok {
		v.errs = append(v.errs, fieldErr(key, format, args...))
	}
}

func (v *validator) positive(key string, n int64) {
	v.check(n > 0, key, "must be positive, is %d", n)
}

func (v *validator) notNegative(key string, n int64) {
	v.check(n >= 0, key, "must not be negative, is %d", n)
}

func (v *validator) positiveDuration(key string, d time.Duration) {
	v.check(d > 0, key, "must be a positive duration, is %s", d)
}

func (v *validator) oneOf(key, value string, allowed ...string) {
	v.check(slices.Contains(allowed, value), key, "%q is not one of %s", value, strings.Join(allowed, ", "))
}

func validListen(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || strings.ContainsAny(host, " /") {
		return false
	}
	_, err = strconv.ParseUint(port, 10, 16)
	return err == nil
}

// validAllowedHost accepts "*", a host name or IP address, or either with
// a port, as a Host header carries them ("[::1]:7423" for IPv6 with a port).
func validAllowedHost(h string) bool {
	if h == "*" {
		return true
	}
	host := h
	if hh, port, err := net.SplitHostPort(h); err == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return false
		}
		host = hh
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		host = h[1 : len(h)-1]
	}
	if host == "" || strings.ContainsAny(host, " /*@?#") {
		return false
	}
	if strings.Contains(host, ":") {
		return net.ParseIP(host) != nil // IPv6: a literal
	}
	return true
}

// validOrigin accepts "*" or scheme://host[:port], as browsers send Origin.
func validOrigin(o string) bool {
	if o == "*" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.Path == "" && u.RawQuery == "" && u.Fragment == "" && u.User == nil
}

func validURL(s string, schemes ...string) bool {
	u, err := url.Parse(s)
	if err != nil || !slices.Contains(schemes, u.Scheme) {
		return false
	}
	switch u.Scheme {
	case "unix", "npipe":
		return u.Path != ""
	}
	return u.Host != ""
}
