package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FrameKind is the first byte of an exec frame.
type FrameKind byte

// Frame kinds. A receiver skips kinds it does not know, so new kinds can be
// added without a protocol version bump.
const (
	FrameStdout FrameKind = 1 // payload: raw bytes the command wrote to stdout
	FrameStderr FrameKind = 2 // payload: raw bytes the command wrote to stderr
	FrameExit   FrameKind = 3 // payload: JSON {exit_code, timed_out, duration_ns}; always the last frame
	FrameError  FrameKind = 4 // payload: JSON {class, message}; at most one, just before the exit frame
)

func (k FrameKind) String() string {
	switch k {
	case FrameStdout:
		return "stdout"
	case FrameStderr:
		return "stderr"
	case FrameExit:
		return "exit"
	case FrameError:
		return "error"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// FrameHeaderSize is the size of a frame header: kind byte plus a
// big-endian uint32 payload length.
const FrameHeaderSize = 5

// MaxFramePayload is the largest payload a receiver accepts. Senders split
// output into frames of at most maxOutputChunk bytes, far below it; the
// limit exists so a corrupt length cannot make a receiver allocate 4 GiB.
const MaxFramePayload = 1 << 20

// maxOutputChunk is the largest stdout/stderr payload the server sends.
const maxOutputChunk = 32 << 10

// ErrFrameTooLarge is returned by FrameReader for a frame whose declared
// length exceeds the reader's limit.
var ErrFrameTooLarge = errors.New("agent: frame payload exceeds limit")

// AppendFrame appends one encoded frame to dst. Payloads longer than
// math.MaxUint32 cannot be represented; callers chunk far below that.
func AppendFrame(dst []byte, kind FrameKind, payload []byte) []byte {
	dst = append(dst, byte(kind))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...)
}

// Frame is one decoded frame. Payload aliases the reader's buffer and is
// valid until the next call to Next.
type Frame struct {
	Kind    FrameKind
	Payload []byte
}

// FrameReader decodes a stream of frames.
type FrameReader struct {
	r   io.Reader
	max int
	hdr [FrameHeaderSize]byte
	buf []byte
}

// NewFrameReader reads frames from r, rejecting payloads longer than max
// (MaxFramePayload when max <= 0).
func NewFrameReader(r io.Reader, max int) *FrameReader {
	if max <= 0 {
		max = MaxFramePayload
	}
	return &FrameReader{r: r, max: max}
}

// Next returns the next frame. It returns io.EOF only when the stream ends
// cleanly between frames, io.ErrUnexpectedEOF when it ends inside one, and
// ErrFrameTooLarge for an oversized length (the stream is then unusable).
func (fr *FrameReader) Next() (Frame, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[1:])
	if uint64(n) > uint64(fr.max) {
		return Frame{}, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, fr.max)
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	fr.buf = fr.buf[:n]
	if _, err := io.ReadFull(fr.r, fr.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return Frame{Kind: FrameKind(fr.hdr[0]), Payload: fr.buf}, nil
}
