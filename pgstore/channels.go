package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/lib/pq"

	"pgmirror/mirror"
)

// MaxMessageBytes bounds a pub/sub message: its channel and its bytes
// together travel in one notification (migrations/0012_channels.sql).
const MaxMessageBytes = 5840

// ErrMessageTooLarge is wrapped by PublishChannel's error for a message
// whose channel and bytes take more than MaxMessageBytes.
var ErrMessageTooLarge = errors.New("message too large")

// PublishChannel sends message on the application channel channel to the
// subscribers of every sidecar (pgmirror_publish_channel), in an autocommit
// statement of its own: once it returns nil, the message is committed and
// on its way, after every message this caller published before. The channel
// must be valid UTF-8 without NUL (Postgres text). It takes a slot of Gate,
// as fetches do, so that publishers cannot take the writer's connections.
func (s *Store) PublishChannel(ctx context.Context, channel string, message []byte) error {
	if n := len(channel) + len(message); n > MaxMessageBytes {
		return fmt.Errorf("%w: channel and message take %d bytes, at most %d (one notification carries a message)",
			ErrMessageTooLarge, n, MaxMessageBytes)
	}
	wait := s.GateWait
	if wait <= 0 {
		wait = DefaultLoaderTimeout
	}
	if err := s.Gate.Acquire(ctx, wait); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	defer s.Gate.Release()
	if message == nil {
		message = []byte{} // NULL is refused
	}
	_, err := s.DB.ExecContext(ctx, `SELECT pgmirror_publish_channel($1::text, $2::bytea)`, channel, message)
	if err == nil {
		return nil
	}
	var pe *pq.Error
	if errors.As(err, &pe) {
		switch pe.Code {
		case "42883": // undefined_function
			return fmt.Errorf("publish: %s (run `pgmirror migrate`: migration 0012 adds it)", pe.Message)
		case "42501": // insufficient_privilege
			return fmt.Errorf("publish: %s (the sidecar's role must be a member of pgmirror_sidecar)", pe.Message)
		case "54000": // program_limit_exceeded
			return fmt.Errorf("%w: %s", ErrMessageTooLarge, pe.Message)
		}
		return fmt.Errorf("publish: %s", pe.Message)
	}
	return fmt.Errorf("publish: %w", err)
}

// Publish records a pub/sub message of the transaction: Commit sends it,
// after the transaction's changes (so a subscriber that reads a key when
// the message arrives finds the transaction's state), with the
// transaction's other messages in the order they were published; a
// transaction rolled back sends none.
func (t *Tx) Publish(channel string, message []byte) error {
	if n := len(channel) + len(message); n > MaxMessageBytes {
		return fmt.Errorf("%w: channel and message take %d bytes, at most %d (one notification carries a message)",
			ErrMessageTooLarge, n, MaxMessageBytes)
	}
	if message == nil {
		message = []byte{}
	}
	t.channels = append(t.channels, channel)
	t.messages = append(t.messages, message)
	return nil
}

// sendMessages sends the transaction's messages in one statement, in
// order, before it commits.
func (t *Tx) sendMessages(ctx context.Context) error {
	if len(t.channels) == 0 {
		return nil
	}
	_, err := t.tx.ExecContext(ctx, `SELECT pgmirror_publish_channel(m.channel, m.message)
		  FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS m(channel, message, n) ORDER BY m.n`,
		pq.Array(t.channels), pq.ByteaArray(t.messages))
	if err != nil {
		return &writeError{kind: mirror.ErrWriteUnavailable, reason: "transaction failed, nothing was written: " +
			oneLine(failed(err).err.Error())}
	}
	return nil
}
