package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lib/pq"

	"pgmirror/mirror"
)

// MaxMessageBytes bounds a pub/sub message: its channel and its bytes
// together travel in one notification (migrations/0012_channels.sql).
const MaxMessageBytes = 5840

// ErrMessageTooLarge is wrapped by PublishChannel's error for a message
// whose channel and bytes take more than MaxMessageBytes.
var ErrMessageTooLarge = errors.New("message too large")

// publishTimeout bounds one statement of messages, so that a caller that
// stopped waiting cannot leave the others waiting longer.
const publishTimeout = 10 * time.Second

// maxPublishBatch bounds the messages one statement sends.
const maxPublishBatch = 256

// publishQueue combines concurrent PublishChannel calls into one statement
// (one commit, one notification per message): a sidecar's publishers share
// commits as its writers do, and notifying commits are serialised by
// Postgres anyway. One statement runs at a time; calls that arrive while it
// runs make the next one, in arrival order.
type publishQueue struct {
	mu      sync.Mutex
	pending []*publishReq
	running bool // a drain goroutine runs
}

type publishReq struct {
	channel string
	message []byte
	done    chan error
}

// PublishChannel sends message on the application channel channel to the
// subscribers of every sidecar (pgmirror_publish_channel). Once it returns
// nil the message is committed and on its way, after every message this
// caller published before; concurrent callers share a statement (each
// caller's messages keep its order: it waits for one before sending the
// next). The channel must be valid UTF-8 without NUL (Postgres text). A
// statement takes a slot of Gate, as fetches do, so that publishers cannot
// take the writer's connections. When ctx ends first the error says so,
// and the message may still be sent.
func (s *Store) PublishChannel(ctx context.Context, channel string, message []byte) error {
	if n := len(channel) + len(message); n > MaxMessageBytes {
		return fmt.Errorf("%w: channel and message take %d bytes, at most %d (one notification carries a message)",
			ErrMessageTooLarge, n, MaxMessageBytes)
	}
	if message == nil {
		message = []byte{} // NULL is refused
	}
	req := &publishReq{channel: channel, message: message, done: make(chan error, 1)}
	q := &s.pubq
	q.mu.Lock()
	q.pending = append(q.pending, req)
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go s.drainPublishes()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("publish: %w (the message may still be sent)", ctx.Err())
	}
}

// drainPublishes sends the queued messages, a statement at a time, until
// none is left.
func (s *Store) drainPublishes() {
	q := &s.pubq
	for {
		q.mu.Lock()
		batch := q.pending
		if len(batch) > maxPublishBatch {
			batch, q.pending = batch[:maxPublishBatch:maxPublishBatch], batch[maxPublishBatch:]
		} else {
			q.pending = nil
		}
		if len(batch) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		err := s.publishBatch(batch)
		for _, r := range batch {
			r.done <- err
		}
	}
}

// publishBatch sends batch's messages in order, in one autocommit statement.
func (s *Store) publishBatch(batch []*publishReq) error {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	wait := s.GateWait
	if wait <= 0 {
		wait = DefaultLoaderTimeout
	}
	if err := s.Gate.Acquire(ctx, wait); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	defer s.Gate.Release()
	var err error
	if len(batch) == 1 {
		_, err = s.DB.ExecContext(ctx, `SELECT pgmirror_publish_channel($1::text, $2::bytea)`, batch[0].channel, batch[0].message)
	} else {
		channels, messages := make([]string, len(batch)), make([][]byte, len(batch))
		for i, r := range batch {
			channels[i], messages[i] = r.channel, r.message
		}
		_, err = s.DB.ExecContext(ctx, publishManySQL, pq.Array(channels), pq.ByteaArray(messages))
	}
	return publishError(err)
}

// publishManySQL sends messages in their order, in one statement.
const publishManySQL = `SELECT pgmirror_publish_channel(m.channel, m.message)
	  FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS m(channel, message, n) ORDER BY m.n`

// publishError words a failed publish statement's error; nil stays nil.
func publishError(err error) error {
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
	_, err := t.tx.ExecContext(ctx, publishManySQL, pq.Array(t.channels), pq.ByteaArray(t.messages))
	if err != nil {
		return &writeError{kind: mirror.ErrWriteUnavailable, reason: "transaction failed, nothing was written: " +
			oneLine(failed(err).err.Error())}
	}
	return nil
}
