package integration

import clientv3 "go.etcd.io/etcd/client/v3"

func withPrevKV() clientv3.OpOption { return clientv3.WithPrevKV() }
