//! The cloud's Prometheus metrics: operations by directory, kind and result, their latency, and,
//! computed at each scrape, connected agents, requests in flight (the queue depth), sync lag and
//! health per directory.

use writeback_config::metrics::{CounterFamily, HistogramFamily, LATENCY_BUCKETS};

#[derive(Debug)]
pub struct CloudMetrics {
    pub operations: CounterFamily,
    pub operation_seconds: HistogramFamily,
}

impl Default for CloudMetrics {
    fn default() -> Self {
        Self {
            operations: CounterFamily::new(
                "writeback_operations_total",
                "Resets, changes and unlocks answered, by directory, operation and result code.",
                &["directory", "operation", "result"],
            ),
            operation_seconds: HistogramFamily::new(
                "writeback_operation_duration_seconds",
                "Time from dispatch to the directory's answer, by operation.",
                &["operation"],
                LATENCY_BUCKETS,
            ),
        }
    }
}
