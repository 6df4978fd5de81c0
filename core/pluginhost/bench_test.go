package pluginhost

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/avonzt/avon/sdk/kms"
	kmsv1 "github.com/avonzt/avon/sdk/proto/kms/v1"
)

// BenchmarkCall compares, in one run, a bare go-plugin gRPC call (generated
// client on the raw connection) with the same call through the host (typed
// client, Instance.Invoke with lifetime merge, metrics and error mapping).
// Serial measures one caller's latency; parallel the amortized cost.
func BenchmarkCall(b *testing.B) {
	f := &fixture{logs: &syncBuffer{}, reg: prometheus.NewRegistry(), audit: &recordingAudit{}, dir: b.TempDir()}
	startWith(b, f, `{"label":"L","size":1}`)
	ctx := context.Background()
	raw := kmsv1.NewKMSClient(f.inst.gen.Load().conn)
	hosted := f.inst.KMS()
	b.Run("bare/serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := raw.GetKey(ctx, &kmsv1.GetKeyRequest{Id: "k"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("host/serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := hosted.GetKey(ctx, &kms.GetKeyRequest{ID: "k"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bare/parallel", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := raw.GetKey(ctx, &kmsv1.GetKeyRequest{Id: "k"}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("host/parallel", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := hosted.GetKey(ctx, &kms.GetKeyRequest{ID: "k"}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
