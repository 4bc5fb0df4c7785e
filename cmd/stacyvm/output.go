package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// printError writes err for a person: the server's code, message, hint
// and request ID on separate lines when the server sent them. subject,
// when not empty, names what failed (one of several sandboxes, say).
func printError(w io.Writer, subject string, err error) {
	prefix := "stacyvm: "
	if subject != "" {
		prefix += subject + ": "
	}
	if e, ok := errors.AsType[*client.Error](err); ok {
		code := e.Code
		if code == "" {
			code = "HTTP " + strconv.Itoa(e.Status)
		}
		fmt.Fprintf(w, "%s%s: %s\n", prefix, code, e.Message)
		if e.Hint != "" {
			fmt.Fprintf(w, "  hint: %s\n", e.Hint)
		}
		if e.RequestID != "" {
			fmt.Fprintf(w, "  request id: %s\n", e.RequestID)
		}
		return
	}
	// The client's own errors already say where they come from.
	fmt.Fprintf(w, "%s%s\n", prefix, strings.TrimPrefix(err.Error(), "stacyvm: "))
	hint := errdefs.Hint(err)
	if hint == "" && errors.Is(err, syscall.ECONNREFUSED) {
		hint = "is the server running? Start one with 'stacyvm serve', or point --server (env " + envServer + ") at it"
	}
	if hint != "" {
		fmt.Fprintf(w, "  hint: %s\n", hint)
	}
}

// jsonFlag adds --json to cmd and returns where its value lands.
func jsonFlag(cmd *cobra.Command) *bool {
	var v bool
	cmd.Flags().BoolVar(&v, "json", false, "print JSON instead of text")
	return &v
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns; the first row is the header.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		// A tab or newline in a value (sandbox metadata, a file name)
		// would break the columns.
		cols[i] = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, c)
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// keyValues prints "key: value" lines with the values aligned.
func keyValues(w io.Writer, pairs ...[2]string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	for _, p := range pairs {
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// until renders how long remains before t, rounded for reading.
func until(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	if d <= 0 {
		return "expired"
	}
	if d >= time.Hour {
		d = d.Round(time.Minute)
	} else {
		d = d.Round(time.Second)
	}
	return "in " + d.String()
}

func timestamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// joinKV renders a string map as sorted k=v pairs.
func joinKV(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

// parseKV parses repeated k=v flag values.
func parseKV(flag string, values []string) (map[string]string, error) {
	if len(values) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(values))
	for _, v := range values {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, usagef("--%s %q: want KEY=VALUE", flag, v)
		}
		out[k] = val
	}
	return out, nil
}

// parseMemory reads a memory size in MiB: a bare number, or one with an
// m/mb/mi/mib or g/gb/gi/gib suffix (any case).
func parseMemory(flag, s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	l := strings.ToLower(strings.TrimSpace(s))
	mult := 1
	for _, suf := range []struct {
		s string
		m int
	}{{"gib", 1024}, {"gb", 1024}, {"gi", 1024}, {"g", 1024}, {"mib", 1}, {"mb", 1}, {"mi", 1}, {"m", 1}} {
		if rest, ok := strings.CutSuffix(l, suf.s); ok {
			l, mult = rest, suf.m
			break
		}
	}
	n, err := strconv.Atoi(l)
	if err != nil || n <= 0 {
		return 0, usagef("--%s %q: want a size in MiB such as 512, 512m or 2g", flag, s)
	}
	return n * mult, nil
}

// eachArg runs op for every argument, printing each one that succeeded
// and reporting each failure; all are attempted even when one fails, and
// the command then exits 1.
func (a *app) eachArg(args []string, op func(string) error) error {
	failed := 0
	for _, arg := range args {
		if err := op(arg); err != nil {
			printError(a.err, arg, err)
			failed++
			continue
		}
		fmt.Fprintln(a.out, arg)
	}
	if failed > 0 {
		return exitCode(exitFailure)
	}
	return nil
}
