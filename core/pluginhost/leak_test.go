package pluginhost

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/avonzt/avon/sdk/kms"
)

// TestNoGoroutineLeak: after Stop, every goroutine the host started for a
// plugin (supervisor, go-plugin client, broker servers, log pumps) is gone.
func TestNoGoroutineLeak(t *testing.T) {
	// Warm up package-level goroutines (gRPC, HTTP transports) first.
	warm := &fixture{logs: &syncBuffer{}, reg: prometheus.NewRegistry(), audit: &recordingAudit{}, dir: t.TempDir()}
	startWith(t, warm, `{"label":"L","size":1}`)
	warm.host.Stop()
	time.Sleep(200 * time.Millisecond)
	before := runtime.NumGoroutine()

	f := &fixture{logs: &syncBuffer{}, reg: prometheus.NewRegistry(), audit: &recordingAudit{}, dir: t.TempDir()}
	startWith(t, f, `{"label":"L","size":1}`)
	for i := 0; i < 10; i++ {
		if _, err := f.inst.KMS().GetKey(context.Background(), &kms.GetKeyRequest{ID: "storage"}); err != nil {
			t.Fatal(err)
		}
	}
	if runtime.NumGoroutine() <= before {
		t.Fatalf("no goroutines started? %d <= %d", runtime.NumGoroutine(), before)
	}
	f.host.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && runtime.NumGoroutine() > before {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		t.Fatalf("%d goroutines after Stop, %d before:\n%s", n, before, leakSummary(stacks))
	}
}

func leakSummary(stacks string) string {
	var out []string
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "hashicorp/go-plugin") || strings.Contains(g, "avon/core/pluginhost") || strings.Contains(g, "google.golang.org/grpc") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
