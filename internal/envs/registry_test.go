package envs

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/registry"
)

func TestRegistryPullAuthOnlyForItsOwnImages(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := Registry{Address: "127.0.0.1:5055", Username: "bot", Password: "ignored", PasswordFile: pw}
	for _, image := range []string{"debian:bookworm", "docker.io/library/python:3", "127.0.0.1:5056/x:1", "evil.example/127.0.0.1:5055/x"} {
		if got, err := r.PullAuth(image); err != nil || got != "" {
			t.Errorf("PullAuth(%q) = %q, %v; want no credentials for another registry", image, got, err)
		}
	}
	got, err := r.PullAuth("127.0.0.1:5055/stacyvm/env:abc")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.URLEncoding.DecodeString(got)
	if err != nil {
		t.Fatal(err)
	}
	var auth registry.AuthConfig
	if err := json.Unmarshal(raw, &auth); err != nil {
		t.Fatal(err)
	}
	if auth.Username != "bot" || auth.Password != "s3cret" || auth.ServerAddress != "127.0.0.1:5055" {
		t.Errorf("credentials = %+v, want the user and the password file's content", auth)
	}
	os.Remove(pw)
	if _, err := r.PullAuth("127.0.0.1:5055/stacyvm/env:abc"); err == nil || strings.Contains(err.Error(), pw) {
		t.Errorf("unreadable password file: %v; want an error that does not show the path", err)
	}
}
