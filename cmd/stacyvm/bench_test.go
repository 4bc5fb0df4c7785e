package main

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/client/clienttest"
)

func TestBenchCommand(t *testing.T) {
	env := clienttest.Start(t)
	r := cli(t, env, "bench", "--raw=false", "-n", "2", "--file-mb", "1", "--image", "any",
		"--server-pid", strconv.Itoa(os.Getpid())).ok(t)
	for _, want := range []string{"spawn (api)", "exec true (api)", "file 1 MiB (api)", "MiB/s", "server peak RSS growth", "p99"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("bench output lacks %q:\n%s", want, r.stdout)
		}
	}
	if got := cli(t, env, "bench", "-n", "0"); got.code != exitUsage {
		t.Errorf("-n 0: exit %d", got.code)
	}
}
