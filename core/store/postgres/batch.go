package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/avonzt/avon/core/store"
)

// qLockAbsent holds "the key is absent" until the transaction ends, for a
// batch's delete that requires the key to be absent: it inserts a
// placeholder row (no row back when the key exists), which the next
// statement, qDelete, removes again. The placeholder is never committed,
// so no one reads it; its index entry makes a concurrent insert of the key
// wait for this transaction, as it would for a created key. (When the key
// exists, qDelete removes the real row, but the failed check rolls the
// whole transaction back.) A plain read, what Delete does, would let two
// batches each find the other's key absent and both commit.
const qLockAbsent = `INSERT INTO avon_kv (key, value, version) VALUES ($1, '', 1)
		ON CONFLICT (key) DO NOTHING
		RETURNING version`

// maxApplyAttempts bounds the runs of a batch the server aborted on a
// deadlock (two batches locking the same keys in opposite orders): it
// rolled the transaction back, so running it again is safe.
const maxApplyAttempts = 3

// errConflict ends the batch transaction after a failed check.
var errConflict = errors.New("batch check failed")

// notCommitted marks an error raised before COMMIT was sent: the server
// rolls the transaction back, so nothing was written and the whole batch
// may run again.
type notCommitted struct{ error }

func (e notCommitted) Unwrap() error     { return e.error }
func (e notCommitted) SafeToRetry() bool { return true }

// Apply implements store.Batcher: one transaction on one connection, each
// op the statement Put or Delete uses for it (a delete that requires the
// key absent locks the absence instead of reading it, see qLockAbsent),
// sent in one pipeline, then COMMIT, or ROLLBACK when a check failed.
// Versions come from avon_kv_version, drawn in op order. The batch runs
// again, up to maxApplyAttempts times in all, when the driver knows
// nothing reached the server (as Store.write does for Put) or when the
// server aborted the transaction on a deadlock. A failure before COMMIT
// was sent wrote nothing and says so; one during COMMIT leaves the outcome
// unknown, as for Put.
func (s *Store) Apply(ctx context.Context, ops []store.Op) ([]int64, error) {
	if err := store.CheckBatch(ops); err != nil {
		return nil, err
	}
	if err := s.ready(ctx, "apply"); err != nil {
		return nil, err
	}
	var vs []int64
	var bad *store.BatchError
	var err error
	for attempt := 1; ; attempt++ {
		ran := false
		err = s.conn(ctx, func(c *pgx.Conn) (err error) {
			ran = true
			vs, bad, err = applyTx(ctx, c, ops)
			return err
		})
		if err != nil && !ran {
			err = notCommitted{err} // no connection: nothing was sent
		}
		if err == nil || attempt == maxApplyAttempts || ctx.Err() != nil || s.closed.Load() || !retryable(err) {
			break
		}
	}
	switch {
	case bad != nil:
		return nil, bad
	case err != nil:
		return nil, s.wrap(ctx, fmt.Sprintf("apply of %d ops", len(ops)), err, true)
	}
	return vs, nil
}

// retryable reports whether a failed run of a batch may run again, as
// Store.write decides for a single write (the driver knows nothing reached
// the server), or because the server aborted the transaction.
func retryable(err error) bool {
	var nc notCommitted
	if errors.As(err, &nc) {
		err = nc.error
	}
	return pgconn.SafeToRetry(err) || aborted(err)
}

// aborted reports whether the server aborted the transaction on a
// deadlock or a serialization failure (it wrote nothing).
func aborted(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// applyTx runs ops in one transaction on c. It returns the versions, or the
// first failed check (the transaction rolled back), or an error.
func applyTx(ctx context.Context, c *pgx.Conn, ops []store.Op) (vs []int64, bad *store.BatchError, err error) {
	tx, err := c.Begin(ctx)
	if err != nil {
		return nil, nil, notCommitted{err}
	}
	committing := false
	defer func() {
		if err != nil || bad != nil {
			// Best effort: a connection left inside a transaction is
			// dropped by the pool on release.
			_ = tx.Rollback(ctx)
		}
		if err != nil && !committing {
			err = notCommitted{err}
		}
	}()
	b := &pgx.Batch{}
	for _, op := range ops {
		queueOp(b, op)
	}
	br := tx.SendBatch(ctx, b)
	vs = make([]int64, len(ops))
	for i, op := range ops {
		v, err := readOp(br, op)
		switch {
		case errors.Is(err, store.ErrVersionConflict):
			// The rest runs on the server and is rolled back with
			// it: its results do not matter.
			_ = br.Close()
			return nil, &store.BatchError{Index: i, Key: op.Key, Err: err}, nil
		case err != nil:
			_ = br.Close()
			return nil, nil, err
		}
		vs[i] = v
	}
	if err := br.Close(); err != nil {
		return nil, nil, err
	}
	committing = true
	if err := tx.Commit(ctx); err != nil {
		return nil, nil, err
	}
	return vs, nil, nil
}

// queueOp queues op's statements: those of Put and Delete, and for a
// delete that requires the key absent, qLockAbsent and the removal of its
// placeholder.
func queueOp(b *pgx.Batch, op store.Op) {
	if op.Delete {
		switch {
		case !op.Check:
			b.Queue(qDelete, op.Key)
		case op.Version == 0:
			b.Queue(qLockAbsent, op.Key)
			b.Queue(qDelete, op.Key)
		default:
			b.Queue(qDeleteVersion, op.Key, op.Version)
		}
		return
	}
	value := op.Value
	if value == nil {
		value = []byte{} // nil would be NULL
	}
	switch {
	case !op.Check:
		b.Queue(qPut, op.Key, value)
	case op.Version == 0:
		b.Queue(qCreate, op.Key, value)
	default:
		b.Queue(qUpdate, op.Key, value, op.Version)
	}
}

// readOp reads the results of op's statements: its version (0 for a
// delete), an error wrapping store.ErrVersionConflict when its check
// failed, or the statement's error.
func readOp(br pgx.BatchResults, op store.Op) (int64, error) {
	var v int64
	switch {
	case op.Delete && !op.Check:
		_, err := br.Exec()
		return 0, err
	case op.Delete && op.Version == 0:
		err := br.QueryRow().Scan(&v)
		_, derr := br.Exec()
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return 0, fmt.Errorf("delete %q: key exists: %w", op.Key, store.ErrVersionConflict)
		case err != nil:
			return 0, err
		}
		return 0, derr
	case op.Delete:
		tag, err := br.Exec()
		if err == nil && tag.RowsAffected() == 0 {
			err = fmt.Errorf("delete %q: key absent or not at version %d: %w", op.Key, op.Version, store.ErrVersionConflict)
		}
		return 0, err
	}
	err := br.QueryRow().Scan(&v)
	switch {
	case errors.Is(err, pgx.ErrNoRows) && op.Version == 0:
		return 0, fmt.Errorf("put %q: key exists: %w", op.Key, store.ErrVersionConflict)
	case errors.Is(err, pgx.ErrNoRows):
		return 0, fmt.Errorf("put %q: key absent or not at version %d: %w", op.Key, op.Version, store.ErrVersionConflict)
	case err != nil:
		return 0, err
	}
	return v, nil
}
