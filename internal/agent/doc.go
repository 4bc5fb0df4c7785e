// Package agent is the protocol between StacyVM and the agent that runs
// inside each sandbox: the server half (NewServer, run by cmd/stacyvm-agent
// inside the sandbox) and the client half (NewClient, used by providers on
// the host).
//
// The server exposes a provider.Guest over plain HTTP/1.1 and the client is a
// provider.Guest over HTTP, so exec and file semantics live in exactly one
// place (package localguest, run by the agent) and this package adds only the
// wire format. HTTP keeps the protocol debuggable with curl, concurrent
// without a bespoke multiplexer, and independent of the transport: anything
// that yields a net.Listener on one side and a net.Conn on the other works
// (unix socket, TCP, vsock, Firecracker's hybrid vsock, stdio).
//
// docs/agent-protocol.md is the normative description of the wire format.
package agent
