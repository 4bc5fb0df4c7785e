package docker

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// The agent socket lives in a directory the sandbox can write: a symbolic
// link planted there must never lead the host to another socket.
func TestDialUnixRefusesPlantedLinks(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "host.sock")
	ln, err := net.Listen("unix", host)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx := context.Background()
	c, err := dialUnix(ctx, host)
	if err != nil {
		t.Fatalf("dial the real socket: %v", err)
	}
	c.Close()

	link := filepath.Join(dir, "agent.sock")
	if err := os.Symlink(host, link); err != nil {
		t.Fatal(err)
	}
	if c, err := dialUnix(ctx, link); err == nil {
		c.Close()
		t.Fatal("dialled through a symbolic link to another socket")
	} else if !errors.Is(err, errdefs.ErrProviderUnavailable) || strings.Contains(err.Error(), dir) {
		t.Errorf("err = %v: want provider unavailable without the host path", err)
	}

	file := filepath.Join(dir, "file.sock")
	os.WriteFile(file, nil, 0o600)
	if _, err := dialUnix(ctx, file); err == nil || !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("a regular file was accepted as the socket: %v", err)
	}

}
