package httpbody

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type failAfter struct {
	data []byte
	err  error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestSend(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 200<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var failed error
		defer func() {
			if r.URL.Path == "/broken" && failed == nil {
				t.Error("onErr was not called")
			}
		}()
		err := io.EOF
		if r.URL.Path == "/broken" {
			err = errors.New("disk gone")
		}
		Send(w, &failAfter{data: big, err: err}, func(e error) { failed = e })
	}))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("ok: %d bytes, %v", len(got), err)
	}

	resp, err = http.Get(srv.URL + "/broken")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatal("a body cut by a read error must not end cleanly")
	}
}

func TestDownloadClassifiesErrorsButNotEOF(t *testing.T) {
	classified := errors.New("classified")
	d := &Download{Body: io.NopCloser(&failAfter{data: []byte("ab"), err: errors.New("raw")}),
		Classify: func(error) error { return classified }}
	b, err := io.ReadAll(d)
	if string(b) != "ab" || !errors.Is(err, classified) {
		t.Fatalf("got %q, %v", b, err)
	}
	d = &Download{Body: io.NopCloser(strings.NewReader("cd")), Classify: func(error) error { return classified }}
	if b, err := io.ReadAll(d); string(b) != "cd" || err != nil {
		t.Fatalf("EOF must pass: %q, %v", b, err)
	}
}
