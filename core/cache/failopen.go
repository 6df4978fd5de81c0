package cache

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// failOpenTotal counts the rate-limit checks AllowFailOpen let through
// because Allow failed, by reason.
var failOpenTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "avon", Subsystem: "cache", Name: "ratelimit_fail_open_total",
	Help: "Rate-limit checks allowed without counting because the cache failed, by reason.",
}, []string{"reason"})

// Collectors returns the package's Prometheus collectors, for the server
// to register with its registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{failOpenTotal}
}

// FailOpenReasons are the values of the reason label of
// avon_cache_ratelimit_fail_open_total.
const (
	ReasonUnavailable = "unavailable"
	ReasonClosed      = "closed"
	ReasonInvalid     = "invalid_argument"
	ReasonContext     = "context"
	ReasonOther       = "other"
)

// FailOpenCount returns how many checks failed open for reason so far.
func FailOpenCount(reason string) float64 {
	var m dto.Metric
	if err := failOpenTotal.WithLabelValues(reason).Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// failOpenWarnEvery is the least time between two fail-open warnings; the
// ones in between are counted and reported with the next.
const failOpenWarnEvery = 10 * time.Second

var failOpenLog struct {
	mu         sync.Mutex
	last       time.Time // when the last warning was logged
	suppressed int       // fail-opens not logged since
}

// AllowFailOpen applies the rate-limit failure policy: it returns c.Allow's
// decision, or, when Allow fails for any reason (the backend down, a
// timeout, even a bad argument), an allowed decision with Remaining 0. Each
// failure is counted in avon_cache_ratelimit_fail_open_total{reason} and
// logged on log as a warning naming the error, at most once every 10
// seconds (with the number of failures not logged since). log may be nil.
//
// Only rate limits may use it: replay sets and tokens fail closed.
func AllowFailOpen(ctx context.Context, c Cache, log hclog.Logger, key string, limit int, window time.Duration) Decision {
	d, err := c.Allow(ctx, key, limit, window)
	if err == nil {
		return d
	}
	reason := failReason(err)
	failOpenTotal.WithLabelValues(reason).Inc()

	failOpenLog.mu.Lock()
	now := time.Now()
	logIt := failOpenLog.last.IsZero() || now.Sub(failOpenLog.last) >= failOpenWarnEvery
	suppressed := failOpenLog.suppressed
	if logIt {
		failOpenLog.last = now
		failOpenLog.suppressed = 0
	} else {
		failOpenLog.suppressed++
	}
	failOpenLog.mu.Unlock()

	if logIt && log != nil {
		log.Warn("rate limit not enforced: cache failed, request allowed",
			"error", err.Error(), "reason", reason, "limit", limit, "window", window,
			"suppressed", suppressed)
	}
	return Decision{Allowed: true}
}

func failReason(err error) string {
	switch {
	case errors.Is(err, ErrUnavailable):
		return ReasonUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ReasonContext
	case errors.Is(err, ErrClosed):
		return ReasonClosed
	case errors.Is(err, ErrInvalidArgument):
		return ReasonInvalid
	}
	return ReasonOther
}
