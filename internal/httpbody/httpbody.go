// Package httpbody moves raw bodies over HTTP the way StacyVM's three
// HTTP protocols (the REST API, the agent protocol and the custom provider
// protocol) all need: file contents streamed out of a handler, downloads
// whose failures are classified, and replies drained for connection reuse.
package httpbody

import (
	"io"
	"net/http"
)

// Send streams r into w after the status has been decided. A read that
// fails after the headers went out can only be reported by breaking the
// chunked stream, so Send reports the error to onErr and aborts the
// handler (http.ErrAbortHandler); a client that went away just ends it.
func Send(w http.ResponseWriter, r io.Reader, onErr func(error)) {
	buf := make([]byte, 64<<10)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client went away
			}
		}
		if rerr == io.EOF {
			return
		}
		if rerr != nil {
			onErr(rerr)
			panic(http.ErrAbortHandler)
		}
	}
}

// Drain finishes a reply whose body carries nothing of use, so that its
// connection goes back to the pool.
func Drain(resp *http.Response) error {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	return resp.Body.Close()
}

// Download is a reply body whose read errors (other than io.EOF) pass
// through Classify, so that a transfer cut mid-way fails with a classified
// error.
type Download struct {
	Body     io.ReadCloser
	Classify func(error) error
}

func (d *Download) Read(p []byte) (int, error) {
	n, err := d.Body.Read(p)
	if err != nil && err != io.EOF {
		err = d.Classify(err)
	}
	return n, err
}

func (d *Download) Close() error { return d.Body.Close() }
