package kvserver

import (
	"context"
	"fmt"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// DefaultWarningApplyDuration is etcd's --warning-apply-duration default:
// requests that take longer are logged.
const DefaultWarningApplyDuration = 100 * time.Millisecond

// maxLoggedKey caps how much of a key a slow-request line shows.
const maxLoggedKey = 256

// slowRequests logs KV and lease requests that took longer than
// WarningApplyDuration, as etcd's "apply request took too long" warning
// does: how long, the request summarised (keys, ranges, revisions and
// sizes, never values), the response's size and the error. It also counts
// them in etcd_server_slow_apply_total.
func (s *Server) slowRequests(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	took := time.Since(start)
	if took <= s.cfg.WarningApplyDuration {
		return resp, err
	}
	summary, readOnly, ok := summarize(req)
	if !ok {
		return resp, err
	}
	if m := s.cfg.Metrics; m != nil {
		m.slowApplies.Inc()
	}
	prefix := ""
	if readOnly {
		prefix = "read-only range "
	}
	attrs := []any{"took", took, "expected-duration", s.cfg.WarningApplyDuration, "prefix", prefix,
		"method", info.FullMethod, "request", summary, "response", s.summarizeResponse(resp)}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	s.log.Warn("apply request took too long", attrs...)
	return resp, err
}

// summarize describes a KV or lease request without values; ok is false
// for requests that are not logged.
func summarize(req any) (summary string, readOnly, ok bool) {
	var b strings.Builder
	switch r := req.(type) {
	case *pb.RangeRequest:
		writeRange(&b, r)
		return b.String(), true, true
	case *pb.PutRequest:
		writePut(&b, r)
	case *pb.DeleteRangeRequest:
		writeDelete(&b, r)
	case *pb.TxnRequest:
		writeTxn(&b, r)
		return b.String(), isReadOnlyTxn(r), true
	case *pb.CompactionRequest:
		fmt.Fprintf(&b, "compaction:<revision:%d physical:%t>", r.Revision, r.Physical)
	case *pb.LeaseGrantRequest:
		fmt.Fprintf(&b, "lease_grant:<ttl:%d id:%d>", r.TTL, r.ID)
	case *pb.LeaseRevokeRequest:
		fmt.Fprintf(&b, "lease_revoke:<id:%d>", r.ID)
	default:
		return "", false, false
	}
	return b.String(), false, true
}

func key(k []byte) string {
	if len(k) > maxLoggedKey {
		return fmt.Sprintf("%q...(%d bytes)", k[:maxLoggedKey], len(k))
	}
	return fmt.Sprintf("%q", k)
}

func writeKeys(b *strings.Builder, k, end []byte) {
	fmt.Fprintf(b, "key:%s", key(k))
	if len(end) > 0 {
		fmt.Fprintf(b, " range_end:%s", key(end))
	}
}

func writeRange(b *strings.Builder, r *pb.RangeRequest) {
	b.WriteString("range:<")
	writeKeys(b, r.Key, r.RangeEnd)
	for _, f := range []struct {
		name string
		v    int64
	}{{"limit", r.Limit}, {"revision", r.Revision}, {"min_mod_revision", r.MinModRevision}, {"max_mod_revision", r.MaxModRevision},
		{"min_create_revision", r.MinCreateRevision}, {"max_create_revision", r.MaxCreateRevision}} {
		if f.v != 0 {
			fmt.Fprintf(b, " %s:%d", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    bool
	}{{"serializable", r.Serializable}, {"keys_only", r.KeysOnly}, {"count_only", r.CountOnly}} {
		if f.v {
			fmt.Fprintf(b, " %s:true", f.name)
		}
	}
	b.WriteString(">")
}

func writePut(b *strings.Builder, r *pb.PutRequest) {
	fmt.Fprintf(b, "put:<key:%s value_size:%d", key(r.Key), len(r.Value))
	if r.Lease != 0 {
		fmt.Fprintf(b, " lease:%d", r.Lease)
	}
	if r.PrevKv {
		b.WriteString(" prev_kv:true")
	}
	if r.IgnoreValue {
		b.WriteString(" ignore_value:true")
	}
	if r.IgnoreLease {
		b.WriteString(" ignore_lease:true")
	}
	b.WriteString(">")
}

func writeDelete(b *strings.Builder, r *pb.DeleteRangeRequest) {
	b.WriteString("delete_range:<")
	writeKeys(b, r.Key, r.RangeEnd)
	if r.PrevKv {
		b.WriteString(" prev_kv:true")
	}
	b.WriteString(">")
}

func writeTxn(b *strings.Builder, r *pb.TxnRequest) {
	b.WriteString("txn:<")
	for _, c := range r.Compare {
		b.WriteString("compare:<")
		writeKeys(b, c.Key, c.RangeEnd)
		fmt.Fprintf(b, " target:%s result:%s", c.Target, c.Result)
		switch c.Target {
		case pb.Compare_VALUE:
			fmt.Fprintf(b, " value_size:%d", len(c.GetValue()))
		case pb.Compare_VERSION:
			fmt.Fprintf(b, " version:%d", c.GetVersion())
		case pb.Compare_CREATE:
			fmt.Fprintf(b, " create_revision:%d", c.GetCreateRevision())
		case pb.Compare_MOD:
			fmt.Fprintf(b, " mod_revision:%d", c.GetModRevision())
		case pb.Compare_LEASE:
			fmt.Fprintf(b, " lease:%d", c.GetLease())
		}
		b.WriteString("> ")
	}
	for _, br := range []struct {
		name string
		ops  []*pb.RequestOp
	}{{"success", r.Success}, {"failure", r.Failure}} {
		for _, op := range br.ops {
			fmt.Fprintf(b, "%s:<", br.name)
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				writeRange(b, v.RequestRange)
			case *pb.RequestOp_RequestPut:
				writePut(b, v.RequestPut)
			case *pb.RequestOp_RequestDeleteRange:
				writeDelete(b, v.RequestDeleteRange)
			case *pb.RequestOp_RequestTxn:
				writeTxn(b, v.RequestTxn)
			}
			b.WriteString("> ")
		}
	}
	b.WriteString(">")
}

// summarizeResponse gives a response's size (and a range's count). A
// large Range's key-values wait encoded in s.encoded until gRPC sends them
// (see rangeBudgeted): they are counted from there.
func (s *Server) summarizeResponse(resp any) string {
	m, ok := resp.(proto.Message)
	if !ok || m == nil {
		return ""
	}
	if r, ok := resp.(*pb.RangeResponse); ok && r != nil {
		n, size := len(r.Kvs), proto.Size(r)
		if v, ok := s.encoded.Load(r); ok {
			enc := v.(*encodedKVs)
			n, size = n+enc.kvs, size+enc.bytes
		}
		return fmt.Sprintf("range_response_count:%d size:%d", n, size)
	}
	return fmt.Sprintf("size:%d", proto.Size(m))
}
