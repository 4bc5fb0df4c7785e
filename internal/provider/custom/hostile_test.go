package custom_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/custom"
)

// hostile backends: each answers every request the same broken way. The
// client must turn every one into a prompt, classified error.
func TestHostileBackend(t *testing.T) {
	const timeout = 300 * time.Millisecond
	status := func(ctx context.Context, c *custom.Provider) error {
		_, err := c.Status(ctx, "sb-1")
		return err
	}
	list := func(ctx context.Context, c *custom.Provider) error {
		_, err := c.List(ctx)
		return err
	}
	execOp := func(ctx context.Context, c *custom.Provider) error {
		_, err := c.Exec(ctx, "sb-1", provider.ExecRequest{Argv: []string{"true"}}, io.Discard, io.Discard)
		return err
	}
	readAll := func(ctx context.Context, c *custom.Provider) error {
		rc, err := c.ReadFile(ctx, "sb-1", "/f")
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.ReadAll(rc)
		return err
	}
	ndjson := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			io.WriteString(w, body)
		}
	}
	// trickle sends headers, then a byte every 50ms, forever.
	trickle := func(ctype, first string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ctype)
			rc := http.NewResponseController(w)
			io.WriteString(w, first)
			rc.Flush()
			for {
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
					io.WriteString(w, " ")
					rc.Flush()
				}
			}
		}
	}
	// shortBody declares more than it sends, then ends the connection.
	shortBody := func(ctype, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ctype)
			w.Header().Set("Content-Length", "100000")
			io.WriteString(w, body)
		}
	}
	huge := func(status int, ctype, open, item, close string, n int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ctype)
			w.WriteHeader(status)
			bw := bufio.NewWriter(w)
			bw.WriteString(open)
			for i := range n {
				if i > 0 && close != "" {
					bw.WriteString(",")
				}
				if _, err := bw.WriteString(item); err != nil {
					return
				}
			}
			bw.WriteString(close)
			bw.Flush()
		}
	}

	tests := []struct {
		name    string
		handler http.HandlerFunc
		op      func(context.Context, *custom.Provider) error
		ctx     time.Duration // caller deadline; 0 means none
		class   *errdefs.Class
		ctxErr  error // instead of a class
	}{
		{name: "WrongContentType", op: status, class: errdefs.ErrProviderUnavailable,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				io.WriteString(w, "<html>captive portal</html>")
			}},
		{name: "MalformedJSON", op: status, class: errdefs.ErrProviderUnavailable,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"id": "sb-1", "state": `)
			}},
		{name: "HugeJSON", op: list, class: errdefs.ErrProviderUnavailable,
			handler: huge(200, "application/json", "[", `{"id":"sb-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`, "]", 1<<20)},
		{name: "HugeErrorBody", op: status, class: errdefs.ErrNotFound,
			handler: huge(404, "application/json", `{"code":"sandbox_not_found","message":"`, strings.Repeat("x", 1024), `"}`, 50<<10)},
		{name: "ErrorNotJSON", op: status, class: errdefs.ErrProviderUnavailable,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, "upstream down")
			}},
		{name: "InternalErrorNoBody", op: status, class: errdefs.ErrProviderUnavailable,
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }},
		{name: "Redirect", op: status, class: errdefs.ErrProviderUnavailable,
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://169.254.169.254/", http.StatusFound)
			}},
		{name: "ErrorCodeWins", op: status, class: errdefs.ErrSandboxDestroyed,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `{"code":"sandbox_destroyed","message":"gone"}`)
			}},
		{name: "HeadersNeverCome", op: status, class: errdefs.ErrProviderUnavailable,
			handler: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{name: "SlowLorisJSON", op: status, class: errdefs.ErrProviderUnavailable,
			handler: trickle("application/json", `{"id":"sb-1"`)},
		{name: "ResetBeforeHeaders", op: status, class: errdefs.ErrProviderUnavailable,
			handler: func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) }},

		{name: "ExecNotAStream", op: execOp, class: errdefs.ErrProviderUnavailable,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"exit_code":0}`)
			}},
		{name: "ExecNoExitLine", op: execOp, class: errdefs.ErrProviderUnavailable,
			handler: ndjson(`{"stream":"stdout","data":"hi\n"}` + "\n")},
		{name: "ExecPartialLine", op: execOp, class: errdefs.ErrProviderUnavailable,
			handler: ndjson(`{"stream":"stdout","data":"hi\n"}` + "\n" + `{"type":"exi`)},
		{name: "ExecTruncated", op: execOp, class: errdefs.ErrProviderUnavailable,
			handler: shortBody("application/x-ndjson", `{"stream":"stdout","data":"hi\n"}`+"\n")},
		{name: "ExecMalformedLine", op: execOp, class: errdefs.ErrProviderUnavailable,
			handler: ndjson("not json at all\n")},
		{name: "ExecBadExitCode", op: execOp, class: errdefs.ErrProviderUnavailable,
			handler: ndjson(`{"type":"exit","exit_code":"zero"}` + "\n")},
		{name: "ExecUnknownStream", op: execOp, class: errdefs.ErrProviderUnavailable,
			handler: ndjson(`{"stream":"stdin","data":"x"}` + "\n" + `{"type":"exit","exit_code":0}` + "\n")},
		{name: "ExecHugeLine", op: execOp, class: errdefs.ErrProviderUnavailable,
			handler: huge(200, "application/x-ndjson", `{"stream":"stdout","data":"`, strings.Repeat("x", 4096), "", 2048)},
		{name: "ExecErrorLine", op: execOp, class: errdefs.ErrSandboxDestroyed,
			handler: ndjson(`{"type":"error","code":"sandbox_destroyed","message":"gone"}` + "\n" + `{"type":"exit","exit_code":-1}` + "\n")},
		{name: "ExecTimedOut", op: execOp, class: errdefs.ErrExecTimeout,
			handler: ndjson(`{"type":"exit","exit_code":-1,"timed_out":true}` + "\n")},
		{name: "ExecHeadersNeverCome", op: execOp, class: errdefs.ErrProviderUnavailable,
			handler: func(w http.ResponseWriter, r *http.Request) {
				// The server notices the client leaving only once the body
				// is read.
				io.Copy(io.Discard, r.Body)
				<-r.Context().Done()
			}},
		{name: "ExecSlowLorisVsDeadline", op: execOp, ctx: 400 * time.Millisecond, ctxErr: context.DeadlineExceeded,
			handler: trickle("application/x-ndjson", `{"stream":"stdout","data":"`)},

		{name: "ReadTruncated", op: readAll, class: errdefs.ErrProviderUnavailable,
			handler: shortBody("application/octet-stream", "only part of the file")},
		{name: "ReadWrongType", op: readAll, class: errdefs.ErrProviderUnavailable,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				io.WriteString(w, "<html>")
			}},
		{name: "ReadSlowLorisVsDeadline", op: readAll, ctx: 400 * time.Millisecond, ctxErr: context.DeadlineExceeded,
			handler: trickle("application/octet-stream", "x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			c, err := custom.New(custom.Options{URL: srv.URL, Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			if tt.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctx)
				defer cancel()
			}
			start := time.Now()
			errc := make(chan error, 1)
			go func() { errc <- tt.op(ctx, c) }()
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				t.Fatal("the call hung for 10s")
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("the call took %v", el)
			}
			switch {
			case err == nil:
				t.Fatal("no error")
			case tt.ctxErr != nil:
				if !errors.Is(err, tt.ctxErr) {
					t.Errorf("error %v, want %v", err, tt.ctxErr)
				}
			case !errors.Is(err, tt.class):
				t.Errorf("error %v (class %v), want class %v", err, errdefs.Classify(err), tt.class)
			}
			t.Logf("%v", err)
			if strings.Contains(err.Error(), srv.URL) {
				t.Errorf("error %q names the backend URL", err)
			}
		})
	}
}
