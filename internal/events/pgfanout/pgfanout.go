// Package pgfanout carries events between the replicas that share one
// PostgreSQL database: each replica NOTIFYs the events its bus publishes
// and LISTENs for the others', which it injects into its own bus. So an
// SSE subscriber on any replica sees what happened through every replica.
//
// Delivery is at most once: PostgreSQL keeps no notification for a
// listener that is not connected, so events published while a replica's
// LISTEN connection is being re-established do not reach it (it logs the
// gap). Event IDs are each replica's own: a client resuming with
// Last-Event-ID resumes on the same replica.
package pgfanout

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stacyvm/stacyvm/internal/events"
)

// Channel is the notification channel. Deployments sharing one database
// (in different schemas) share it too; an event carries its deployment's
// instance id and the others ignore it.
const Channel = "stacyvm_events"

// maxPayload is below PostgreSQL's limit of 8000 bytes for a payload.
const maxPayload = 7900

// queue bounds the events waiting to be sent; past it events are dropped
// (and logged) rather than block the bus.
const queue = 1024

type envelope struct {
	Instance string       `json:"i"`
	Origin   string       `json:"o"`
	Event    events.Event `json:"e"`
}

// Fanout connects a bus to the other replicas. Close stops it.
type Fanout struct {
	bus      *events.Bus
	pool     *pgxpool.Pool
	conn     *pgx.ConnConfig
	instance string
	origin   string
	log      *slog.Logger

	out    chan events.Event
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start listens for the other replicas' events (before it returns, so
// none published after it is missed) and forwards bus's own. instance is
// the deployment's id, origin this replica's name; conn configures the
// dedicated LISTEN connection and pool sends.
func Start(ctx context.Context, pool *pgxpool.Pool, conn *pgx.ConnConfig, bus *events.Bus, instance, origin string, log *slog.Logger) (*Fanout, error) {
	f := &Fanout{bus: bus, pool: pool, conn: conn, instance: instance, origin: origin, log: log,
		out: make(chan events.Event, queue)}
	lc, err := f.listen(ctx)
	if err != nil {
		return nil, err
	}
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	f.wg.Go(func() { f.receive(run, lc) })
	f.wg.Go(func() { f.send(run) })
	bus.Forward(func(e events.Event) {
		select {
		case f.out <- e:
		default:
			f.log.Warn("event fan-out queue full: an event does not reach the other replicas", "type", e.Type, "sandbox", e.SandboxID)
		}
	})
	return f, nil
}

// Close stops forwarding and listening.
func (f *Fanout) Close() {
	f.bus.Forward(nil)
	f.cancel()
	f.wg.Wait()
}

func (f *Fanout) listen(ctx context.Context) (*pgx.Conn, error) {
	c, err := pgx.ConnectConfig(ctx, f.conn.Copy())
	if err != nil {
		return nil, err
	}
	if _, err := c.Exec(ctx, "LISTEN "+Channel); err != nil {
		c.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return c, nil
}

func (f *Fanout) receive(ctx context.Context, c *pgx.Conn) {
	defer func() {
		if c != nil {
			c.Close(context.WithoutCancel(ctx))
		}
	}()
	backoff := 100 * time.Millisecond
	for {
		if c == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			var err error
			if c, err = f.listen(ctx); err != nil {
				backoff = min(2*backoff, 5*time.Second)
				f.log.Warn("event fan-out: reconnect", "err", err)
				continue
			}
			backoff = 100 * time.Millisecond
			f.log.Warn("event fan-out: listening again; events of other replicas published meanwhile were missed")
		}
		n, err := c.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.log.Warn("event fan-out: connection lost", "err", err)
			c.Close(context.WithoutCancel(ctx))
			c = nil
			continue
		}
		var env envelope
		if err := json.Unmarshal([]byte(n.Payload), &env); err != nil {
			f.log.Warn("event fan-out: undecodable notification", "err", err)
			continue
		}
		if env.Origin == f.origin || env.Instance != f.instance {
			continue // our own, or another deployment's
		}
		f.bus.Inject(env.Event)
	}
}

func (f *Fanout) send(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-f.out:
			payload, err := f.encode(e)
			if err != nil {
				f.log.Warn("event fan-out: encode", "err", err)
				continue
			}
			if _, err := f.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, payload); err != nil && !errors.Is(err, context.Canceled) {
				f.log.Warn("event fan-out: notify", "type", e.Type, "sandbox", e.SandboxID, "err", err)
			}
		}
	}
}

// encode wraps e, dropping its data (and saying so) when it would not fit
// in a notification.
func (f *Fanout) encode(e events.Event) (string, error) {
	b, err := json.Marshal(envelope{Instance: f.instance, Origin: f.origin, Event: e})
	if err != nil || len(b) <= maxPayload {
		return string(b), err
	}
	e.Data = map[string]string{"truncated": "the event's data was too large to reach other replicas"}
	b, err = json.Marshal(envelope{Instance: f.instance, Origin: f.origin, Event: e})
	return string(b), err
}
