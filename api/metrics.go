package api

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
)

// recorded is the JSON form of a recorded approval.
func recorded(a event.Approval) any { return store.ApprovalJSON(a) }

func (s *Server) init() {
	s.registry = prometheus.NewRegistry()
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "loopgate_approvals_pending", Help: "Approval requests waiting for a decision.",
	}, func() float64 { return float64(len(s.Broker.Pending())) }))
	if s.Store != nil {
		s.registry.MustRegister(&storeCollector{db: s.Store})
	}
}

// storeCollector reports recorded totals at scrape time.
type storeCollector struct{ db *store.DB }

var (
	sessionsDesc  = prometheus.NewDesc("loopgate_sessions_total", "Sessions recorded, by outcome.", []string{"outcome"}, nil)
	decisionsDesc = prometheus.NewDesc("loopgate_decisions_total", "Recorded policy decisions, by action.", []string{"action"}, nil)
	approvalsDesc = prometheus.NewDesc("loopgate_approvals_total", "Approval requests, by state.", []string{"state"}, nil)
	waitDesc      = prometheus.NewDesc("loopgate_approval_wait_seconds_avg", "Average time from request to decision.", nil, nil)
	errorsDesc    = prometheus.NewDesc("loopgate_proxy_errors_total", "Sessions that ended in an error.", nil, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionsDesc
	ch <- decisionsDesc
	ch <- approvalsDesc
	ch <- waitDesc
	ch <- errorsDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.db.Stats(ctx)
	if err != nil {
		return
	}
	for k, v := range st.Sessions {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.CounterValue, float64(v), k)
	}
	for k, v := range st.Decisions {
		ch <- prometheus.MustNewConstMetric(decisionsDesc, prometheus.CounterValue, float64(v), k)
	}
	for k, v := range st.Approvals {
		ch <- prometheus.MustNewConstMetric(approvalsDesc, prometheus.CounterValue, float64(v), k)
	}
	ch <- prometheus.MustNewConstMetric(waitDesc, prometheus.GaugeValue, st.ApprovalWait.Seconds())
	ch <- prometheus.MustNewConstMetric(errorsDesc, prometheus.CounterValue, float64(st.Sessions["error"]+st.Sessions["internal_error"]))
}
