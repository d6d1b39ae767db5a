//! The cloud's Prometheus metrics: operations by directory, kind and result, their latency, and,
//! computed at each scrape, connected agents, requests in flight (the queue depth), sync lag and
//! health per directory.

use writeback_config::metrics::{CounterFamily, HistogramFamily, LATENCY_BUCKETS, render_gauge};
use writeback_proto::api::HealthState;
use writeback_proto::time::UnixMillis;

use crate::service::health;
use crate::service::state::AppState;

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

/// The metrics as Prometheus text, gauges computed now.
pub async fn render(state: &AppState) -> Result<String, writeback_store::StoreError> {
    let now = UnixMillis::now();
    let mut out = String::new();
    state.metrics.operations.render(&mut out);
    state.metrics.operation_seconds.render(&mut out);
    let live = state.relay.live_agents();
    let mut connected = Vec::new();
    let mut in_flight = Vec::new();
    let mut lag = Vec::new();
    let mut healthy = Vec::new();
    for judged in health::of_every_directory(state, now).await? {
        let name = judged.directory.to_string();
        let waiting: usize = live
            .iter()
            .filter(|agent| agent.directory == judged.directory)
            .map(|agent| agent.requests_in_flight)
            .sum();
        connected.push((vec![name.clone()], judged.agents_connected as f64));
        in_flight.push((vec![name.clone()], waiting as f64));
        let status = state.store.sync_status(&judged.directory, now).await?;
        if let Some(age) = status.cursor_age_ms {
            lag.push((vec![name.clone()], age as f64 / 1000.0));
        }
        healthy.push((
            vec![name, judged.state.as_str().to_owned()],
            f64::from(u8::from(judged.state == HealthState::Healthy)),
        ));
    }
    render_gauge(
        "writeback_agents_connected",
        "Agents connected, by directory.",
        &["directory"],
        &connected,
        &mut out,
    );
    render_gauge(
        "writeback_requests_in_flight",
        "Operations sent to agents and not answered yet, by directory.",
        &["directory"],
        &in_flight,
        &mut out,
    );
    render_gauge(
        "writeback_sync_lag_seconds",
        "Time since the agent last confirmed the sync cursor, by directory.",
        &["directory"],
        &lag,
        &mut out,
    );
    render_gauge(
        "writeback_directory_healthy",
        "1 when the directory's health is healthy, else 0; the state is a label.",
        &["directory", "state"],
        &healthy,
        &mut out,
    );
    Ok(out)
}
