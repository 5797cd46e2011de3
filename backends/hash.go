// Hashing: HashKV's checksum of the key space's history at a revision.

package backends

import (
	"context"
	"hash/crc32"
	"math"
)

// hashBatchRevs is how many revisions of history Hash reads per query.
const hashBatchRevs = 1000

// Hash implements Backend: a CRC-32C over every stored version at or below
// rev, in (rev, sub) order.
func (e *Engine) Hash(ctx context.Context, rev int64) (uint32, int64, error) {
	var sum uint32
	var compact int64
	err := e.read(ctx, func(tx Tx) error {
		cur, c, err := e.revisions(ctx, tx)
		if err != nil {
			return err
		}
		compact = c
		if rev == 0 {
			rev = cur
		}
		if err := checkRev(rev, cur, compact); err != nil {
			return err
		}
		h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
		var buf [8]byte
		putInt := func(v int64) {
			for i := range 8 {
				buf[i] = byte(v >> (8 * i))
			}
			h.Write(buf[:])
		}
		for lo := int64(0); lo < rev; {
			hi := min(lo+hashBatchRevs, rev)
			evs, err := tx.Changes(ctx, lo, hi, e.cfg.ChangesBytes)
			if err != nil {
				return err
			}
			lo = hi
			if n := len(evs); n > 0 && eventsBytes(evs) >= e.cfg.ChangesBytes {
				lo = evs[n-1].Kv.ModRevision // cut short by size: go on after it
			}
			if len(evs) == 0 && lo < rev {
				// A gap in the log (compacted away, or the revisions a
				// fence skipped): go on before the next row there is.
				next, err := tx.History(ctx, lo, math.MaxInt64, 1)
				if err != nil {
					return err
				}
				if len(next) == 0 {
					break
				}
				lo = max(lo, next[0].Rev-1)
			}
			for _, ev := range evs {
				putInt(ev.Kv.ModRevision)
				putInt(int64(ev.Type))
				putInt(int64(len(ev.Kv.Key)))
				h.Write(ev.Kv.Key)
				putInt(ev.Kv.CreateRevision)
				putInt(ev.Kv.Version)
				putInt(ev.Kv.Lease)
				putInt(int64(len(ev.Kv.Value)))
				h.Write(ev.Kv.Value)
			}
		}
		sum = h.Sum32()
		return nil
	})
	return sum, compact, err
}
