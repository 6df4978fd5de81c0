package pluginhost

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the plugin host's Prometheus metrics.
type Metrics struct {
	calls    *prometheus.CounterVec   // kind, name, method
	errors   *prometheus.CounterVec   // kind, name, method
	latency  *prometheus.HistogramVec // kind, name, method
	restarts *prometheus.CounterVec   // kind, name
	up       *prometheus.GaugeVec     // kind, name
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "avon", Subsystem: "plugin", Name: "calls_total",
			Help: "Calls made to plugins, by plugin and gRPC method.",
		}, []string{"kind", "name", "method"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "avon", Subsystem: "plugin", Name: "call_errors_total",
			Help: "Plugin calls that returned an error, by plugin and gRPC method.",
		}, []string{"kind", "name", "method"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "avon", Subsystem: "plugin", Name: "call_duration_seconds",
			Help:    "Latency of plugin calls as seen by the core.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1},
		}, []string{"kind", "name", "method"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "avon", Subsystem: "plugin", Name: "restarts_total",
			Help: "Times the supervisor restarted a plugin process.",
		}, []string{"kind", "name"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "avon", Subsystem: "plugin", Name: "up",
			Help: "1 when the plugin is running and configured, else 0.",
		}, []string{"kind", "name"}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.errors, m.latency, m.restarts, m.up)
	}
	return m
}

// methodMetrics caches the per-method children so a call does no label hashing.
type methodMetrics struct {
	calls, errors prometheus.Counter
	latency       prometheus.Observer
}

type instanceMetrics struct {
	m          *Metrics
	kind, name string
	methods    sync.Map // full method name -> *methodMetrics
}

func (im *instanceMetrics) method(full string) *methodMetrics {
	if v, ok := im.methods.Load(full); ok {
		return v.(*methodMetrics)
	}
	short := full
	for i := len(full) - 1; i >= 0; i-- {
		if full[i] == '/' {
			short = full[i+1:]
			break
		}
	}
	mm := &methodMetrics{
		calls:   im.m.calls.WithLabelValues(im.kind, im.name, short),
		errors:  im.m.errors.WithLabelValues(im.kind, im.name, short),
		latency: im.m.latency.WithLabelValues(im.kind, im.name, short),
	}
	v, _ := im.methods.LoadOrStore(full, mm)
	return v.(*methodMetrics)
}
