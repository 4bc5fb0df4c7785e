package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ShutdownGrace is how long Serve lets in-flight requests finish after its
// context ends before it closes their connections (which cancels running
// commands).
const ShutdownGrace = 5 * time.Second

// Serve serves h on ln until ctx is done or ln stops accepting, and closes
// ln. It returns nil after a shutdown caused by ctx or by the listener
// closing (a one-connection listener whose connection ended), and the
// accept error otherwise.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler: h,
		// Bounds a peer that opens a connection and never finishes a
		// request; there is no write timeout because exec streams and
		// downloads last as long as they last.
		ReadHeaderTimeout: 30 * time.Second,
		// Longer than the client's idle timeout so the client, not the
		// server, closes idle connections: a request is then never sent on
		// a connection the server is closing at that moment.
		IdleTimeout: 10 * time.Minute,
		ErrorLog:    slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownGrace)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		_ = srv.Close()
	}
	if err == nil {
		err = <-errc
	}
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
