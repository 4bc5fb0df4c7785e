package fcapi

import (
	"bytes"
	"net/http"
	"os"
	"strings"
	"testing"
)

func mustLoad(t *testing.T) *Spec {
	t.Helper()
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLoadEmbedded(t *testing.T) {
	s := mustLoad(t)
	if s.Version == "" {
		t.Error("no version")
	}
	for _, op := range []struct{ method, path, id string }{
		{"PUT", "/machine-config", "putMachineConfiguration"},
		{"PUT", "/boot-source", "putGuestBootSource"},
		{"PUT", "/drives/rootfs", "putGuestDriveByID"},
		{"PUT", "/vsock", "putGuestVsock"},
		{"PUT", "/entropy", "putEntropyDevice"},
		{"PUT", "/actions", "createSyncAction"},
		{"PATCH", "/vm", "patchVm"},
		{"PUT", "/snapshot/create", "createSnapshot"},
		{"PUT", "/snapshot/load", "loadSnapshot"},
		{"GET", "/", "describeInstance"},
	} {
		id, err := s.OperationID(op.method, op.path)
		if err != nil || id != op.id {
			t.Errorf("OperationID(%s %s) = %q, %v; want %q", op.method, op.path, id, err, op.id)
		}
	}
}

// The embedded description must stay the one the team was given; a copy
// that drifted would validate against something else.
func TestEmbeddedMatchesReference(t *testing.T) {
	const ref = "../../../../../shared/reference/firecracker-api.yaml"
	b, err := os.ReadFile(ref)
	if err != nil {
		t.Skipf("reference copy not beside the repository (%v); nothing to compare", err)
	}
	if !bytes.Equal(b, specYAML) {
		t.Error("fcapi/firecracker-api.yaml differs from shared/reference/firecracker-api.yaml")
	}
}

func TestValidateRequest(t *testing.T) {
	s := mustLoad(t)
	tests := []struct {
		name, method, path, body string
		wantErr                  string // substring; "" means valid
	}{
		{"machine config", "PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":512,"smt":false}`, ""},
		{"machine config missing memory", "PUT", "/machine-config", `{"vcpu_count":2}`, `"mem_size_mib" is missing`},
		{"vcpu below minimum", "PUT", "/machine-config", `{"vcpu_count":0,"mem_size_mib":512}`, "below the minimum"},
		{"vcpu above maximum", "PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":512}`, "above the maximum"},
		{"vcpu not integer", "PUT", "/machine-config", `{"vcpu_count":1.5,"mem_size_mib":512}`, "not an integer"},
		{"memory as string", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":"512"}`, "want integer"},
		{"unknown field", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":512,"cpus":1}`, `unknown field "cpus"`},
		{"huge pages enum", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":512,"huge_pages":"1G"}`, "is not one of"},
		{"boot source", "PUT", "/boot-source", `{"kernel_image_path":"/k","boot_args":"console=ttyS0"}`, ""},
		{"boot source without kernel", "PUT", "/boot-source", `{"boot_args":"x"}`, "kernel_image_path"},
		{"drive", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"r.ext4","is_root_device":true,"is_read_only":false}`, ""},
		{"drive bool as string", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","is_root_device":"true"}`, "want a boolean"},
		{"drive cache enum", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","is_root_device":true,"cache_type":"None"}`, "is not one of"},
		{"vsock cid minimum", "PUT", "/vsock", `{"guest_cid":2,"uds_path":"v.sock"}`, "below the minimum"},
		{"action enum", "PUT", "/actions", `{"action_type":"InstanceStop"}`, "is not one of"},
		{"action", "PUT", "/actions", `{"action_type":"InstanceStart"}`, ""},
		{"vm state", "PATCH", "/vm", `{"state":"Paused"}`, ""},
		{"vm state enum", "PATCH", "/vm", `{"state":"Stopped"}`, "is not one of"},
		{"snapshot create", "PUT", "/snapshot/create", `{"snapshot_path":"s","mem_file_path":"m","snapshot_type":"Full"}`, ""},
		{"snapshot load backend", "PUT", "/snapshot/load", `{"snapshot_path":"s","mem_backend":{"backend_type":"File","backend_path":"m"},"resume_vm":true}`, ""},
		{"snapshot load both mem fields", "PUT", "/snapshot/load", `{"snapshot_path":"s","mem_file_path":"m","mem_backend":{"backend_type":"File","backend_path":"m"}}`, "exactly one of"},
		{"snapshot load no mem field", "PUT", "/snapshot/load", `{"snapshot_path":"s"}`, "exactly one of"},
		{"snapshot load backend enum", "PUT", "/snapshot/load", `{"snapshot_path":"s","mem_backend":{"backend_type":"Disk","backend_path":"m"}}`, "is not one of"},
		{"entropy empty object", "PUT", "/entropy", `{}`, ""},
		{"metrics open map", "PUT", "/metrics", `{"metrics_path":"m","properties":{"a":"b"}}`, ""},
		{"metrics open map typed", "PUT", "/metrics", `{"metrics_path":"m","properties":{"a":1}}`, "want a string"},
		{"body required", "PUT", "/actions", ``, "requires a body"},
		{"body not JSON", "PUT", "/actions", `{`, "not JSON"},
		{"body on GET", "GET", "/", `{}`, "takes no body"},
		{"unknown path", "PUT", "/nope", `{}`, "no path"},
		{"wrong method", "DELETE", "/vm", ``, "no DELETE"},
		{"array where object", "PUT", "/vsock", `[]`, "want an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.ValidateRequest(tt.method, tt.path, []byte(tt.body))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("want valid, got %v", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("want an error containing %q, got none", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateResponse(t *testing.T) {
	s := mustLoad(t)
	tests := []struct {
		name, method, path string
		status             int
		body               string
		ok                 bool
	}{
		{"no content", "PUT", "/actions", http.StatusNoContent, "", true},
		{"no content with body", "PUT", "/actions", http.StatusNoContent, `{}`, false},
		{"fault", "PUT", "/actions", http.StatusBadRequest, `{"fault_message":"no"}`, true},
		{"default fault", "PUT", "/vsock", http.StatusInternalServerError, `{"fault_message":"no"}`, true},
		{"fault without body", "PUT", "/vsock", http.StatusBadRequest, ``, false},
		{"undeclared success", "PUT", "/actions", http.StatusOK, `{}`, false},
		{"instance info", "GET", "/", http.StatusOK, `{"app_name":"Firecracker","id":"x","state":"Running","vmm_version":"1"}`, true},
		{"instance info bad state", "GET", "/", http.StatusOK, `{"app_name":"Firecracker","id":"x","state":"Booting","vmm_version":"1"}`, false},
		{"instance info missing id", "GET", "/", http.StatusOK, `{"app_name":"Firecracker","state":"Running","vmm_version":"1"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.ValidateResponse(tt.method, tt.path, tt.status, []byte(tt.body))
			if (err == nil) != tt.ok {
				t.Errorf("ValidateResponse = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := map[string]string{
		"swagger 3":       "openapi: 3.0.0\n",
		"unknown keyword": "swagger: \"2.0\"\npaths: {}\ndefinitions:\n  A:\n    type: string\n    pattern: x\n",
		"dangling ref":    "swagger: \"2.0\"\npaths: {}\ndefinitions:\n  A:\n    $ref: \"#/definitions/B\"\n",
	}
	for name, doc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(doc)); err == nil {
				t.Error("Parse accepted it")
			}
		})
	}
}
