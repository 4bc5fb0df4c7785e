package envs

import (
	"strings"
	"testing"
)

func TestBuildLogBound(t *testing.T) {
	l := newBuildLog(10, "")
	l.Write([]byte("0123456789"))
	data, skipped, next, _ := l.ReadFrom(0)
	if data != "0123456789" || skipped != 0 || next != 10 {
		t.Fatalf("ReadFrom(0) = %q %d %d", data, skipped, next)
	}
	l.Write([]byte("abcd"))
	if got := l.String(); got != "[stacyvm: 4 bytes of earlier output dropped]\n456789abcd" {
		t.Errorf("String() = %q", got)
	}
	// A follower at 10 gets only the new bytes; one at 0 learns it
	// missed 4.
	if data, skipped, next, _ := l.ReadFrom(10); data != "abcd" || skipped != 0 || next != 14 {
		t.Errorf("ReadFrom(10) = %q %d %d", data, skipped, next)
	}
	if data, skipped, _, _ := l.ReadFrom(0); data != "456789abcd" || skipped != 4 {
		t.Errorf("ReadFrom(0) = %q %d", data, skipped)
	}
	big := newBuildLog(1<<10, "")
	big.Write([]byte(strings.Repeat("x", 5<<10)))
	if len(big.String()) > 1<<10+64 {
		t.Errorf("a bound of 1 KiB kept %d bytes", len(big.String()))
	}
}
