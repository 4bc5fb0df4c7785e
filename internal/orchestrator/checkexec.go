package orchestrator

import "context"

// CheckExec returns the error Exec or ExecStream would fail with before
// running anything (unknown, destroyed or expired sandbox, provider gone,
// invalid request), or nil. The API calls it before it commits a 200 to a
// streamed response, so that such failures keep their HTTP status.
func (m *Manager) CheckExec(ctx context.Context, id string, req ExecRequest) error {
	sb, p, err := m.guest(ctx, id, "exec")
	if err != nil {
		return err
	}
	_, err = m.providerRequest(sb, p, req)
	return err
}
