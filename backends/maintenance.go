package backends

import (
	"context"
	"database/sql/driver"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"syscall"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// hashPage is how many keys HashKeys reads per statement.
const hashPage = 1000

// HashKeys implements Backend: a CRC-32C (Castagnoli) over the live key
// space at the current revision, read page by page from one snapshot.
func (e *Engine) HashKeys(ctx context.Context) (uint32, int64, error) {
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	var cur int64
	err := e.read(ctx, func(tx Tx) error {
		var err error
		if cur, _, err = e.revisions(ctx, tx); err != nil {
			return err
		}
		from := []byte{0}
		for {
			kvs, err := tx.Range(ctx, KeyRange{Key: from, FromKey: true}, 0, hashPage, false)
			if err != nil {
				return err
			}
			for _, kv := range kvs {
				hashKV(h, kv)
			}
			if len(kvs) < hashPage {
				return nil
			}
			last := kvs[len(kvs)-1].Key
			from = append(append(make([]byte, 0, len(last)+1), last...), 0)
		}
	})
	return h.Sum32(), cur, err
}

// hashKV feeds one key-value to h: each field, variable-length ones
// preceded by their length, so that no two key spaces hash the same input.
func hashKV(h io.Writer, kv *mvccpb.KeyValue) {
	var buf [8]byte
	putInt := func(v int64) {
		for i := range 8 {
			buf[i] = byte(v >> (8 * i))
		}
		_, _ = h.Write(buf[:])
	}
	putInt(int64(len(kv.Key)))
	_, _ = h.Write(kv.Key)
	putInt(kv.CreateRevision)
	putInt(kv.ModRevision)
	putInt(kv.Version)
	putInt(kv.Lease)
	putInt(int64(len(kv.Value)))
	_, _ = h.Write(kv.Value)
}

// Alarms implements Backend.
func (e *Engine) Alarms(ctx context.Context) ([]*pb.AlarmMember, error) {
	var out []*pb.AlarmMember
	err := e.read(ctx, func(tx Tx) error {
		var err error
		out, err = tx.AlarmList(ctx)
		return err
	})
	return out, err
}

// SetAlarm implements Backend. It runs in the group-commit writer, like
// every other write.
func (e *Engine) SetAlarm(ctx context.Context, a *pb.AlarmMember, active bool) (bool, error) {
	var changed bool
	err := e.write(ctx, func(ctx context.Context, o *overlay, cur int64) (int64, error) {
		var err error
		if active {
			changed, err = o.tx.AlarmInsert(ctx, a.MemberID, int32(a.Alarm))
		} else {
			changed, err = o.tx.AlarmDelete(ctx, a.MemberID, int32(a.Alarm))
		}
		return cur, err
	})
	if err != nil {
		return false, err // the writer may still run apply: changed is not ours to read
	}
	return changed, nil
}

// ErrorClass implements Backend: the dialect's class if it names one,
// else ErrorClass(err).
func (e *Engine) ErrorClass(err error) string {
	if s := e.d.ErrorClass(err); s != "" {
		return s
	}
	return ErrorClass(err)
}

// ErrorClass classifies a database error from the standard library's
// view of it: "timeout", "connection" (the connection failed or was
// refused) or "other".
func ErrorClass(err error) string {
	var ne net.Error
	var op *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.As(err, &op):
		return "connection"
	}
	return "other"
}
