//! Counters, histograms and gauges in the Prometheus text format (version 0.0.4), shared by the
//! cloud's `/metrics` and the agent's metrics endpoint. Small on purpose: labelled counters and
//! histograms kept in memory, and gauges computed by the caller at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The media type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A label value as the text format requires it: backslash, quote and newline escaped.
fn escape(value: &str, out: &mut String) {
    for character in value.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

fn labels(names: &[&str], values: &[String], extra: Option<(&str, &str)>, out: &mut String) {
    let mut pairs: Vec<(&str, &str)> = names
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .collect();
    pairs.extend(extra);
    if pairs.is_empty() {
        return;
    }
    out.push('{');
    for (index, (name, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape(value, out);
        out.push('"');
    }
    out.push('}');
}

fn header(name: &str, help: &str, kind: &str, out: &mut String) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[derive(Debug)]
pub struct CounterFamily {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterFamily {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            label_names,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one to the counter with these label values, given in the order of the label names.
    pub fn increment(&self, label_values: &[&str]) {
        self.add(label_values, 1);
    }

    pub fn add(&self, label_values: &[&str], amount: u64) {
        let key = label_values
            .iter()
            .map(|value| (*value).to_owned())
            .collect();
        *lock(&self.values).entry(key).or_default() += amount;
    }

    pub fn get(&self, label_values: &[&str]) -> u64 {
        let key: Vec<String> = label_values
            .iter()
            .map(|value| (*value).to_owned())
            .collect();
        lock(&self.values).get(&key).copied().unwrap_or(0)
    }

    pub fn render(&self, out: &mut String) {
        header(self.name, self.help, "counter", out);
        for (values, count) in lock(&self.values).iter() {
            out.push_str(self.name);
            labels(self.label_names, values, None, out);
            let _ = writeln!(out, " {count}");
        }
    }
}

#[derive(Debug, Clone, Default)]
struct HistogramValue {
    /// Per bucket, not cumulative; made cumulative when rendered.
    bucket_counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug)]
pub struct HistogramFamily {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    /// Upper bounds, ascending; `+Inf` is implied.
    buckets: &'static [f64],
    values: Mutex<BTreeMap<Vec<String>, HistogramValue>>,
}

impl HistogramFamily {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            label_names,
            buckets,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, label_values: &[&str], value: f64) {
        let key = label_values
            .iter()
            .map(|value| (*value).to_owned())
            .collect();
        let mut values = lock(&self.values);
        let entry = values.entry(key).or_insert_with(|| HistogramValue {
            bucket_counts: vec![0; self.buckets.len()],
            ..HistogramValue::default()
        });
        if let Some(index) = self.buckets.iter().position(|bound| value <= *bound) {
            entry.bucket_counts[index] += 1;
        }
        entry.sum += value;
        entry.count += 1;
    }

    pub fn render(&self, out: &mut String) {
        header(self.name, self.help, "histogram", out);
        for (values, histogram) in lock(&self.values).iter() {
            let mut cumulative = 0;
            for (bound, count) in self.buckets.iter().zip(&histogram.bucket_counts) {
                cumulative += count;
                let _ = write!(out, "{}_bucket", self.name);
                labels(
                    self.label_names,
                    values,
                    Some(("le", &bound.to_string())),
                    out,
                );
                let _ = writeln!(out, " {cumulative}");
            }
            let _ = write!(out, "{}_bucket", self.name);
            labels(self.label_names, values, Some(("le", "+Inf")), out);
            let _ = writeln!(out, " {}", histogram.count);
            let _ = write!(out, "{}_sum", self.name);
            labels(self.label_names, values, None, out);
            let _ = writeln!(out, " {}", histogram.sum);
            let _ = write!(out, "{}_count", self.name);
            labels(self.label_names, values, None, out);
            let _ = writeln!(out, " {}", histogram.count);
        }
    }
}

/// A gauge computed at scrape time: one sample per set of label values.
pub fn render_gauge(
    name: &str,
    help: &str,
    label_names: &[&str],
    samples: &[(Vec<String>, f64)],
    out: &mut String,
) {
    header(name, help, "gauge", out);
    for (values, value) in samples {
        out.push_str(name);
        labels(label_names, values, None, out);
        let _ = writeln!(out, " {value}");
    }
}

/// Seconds-scale buckets for operation latency: a reset is tens of milliseconds on a warm
/// connection, and the cloud gives up at 15 seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_gauges_render_in_the_text_format() {
        let operations = CounterFamily::new(
            "writeback_operations_total",
            "Operations by kind and result.",
            &["operation", "result"],
        );
        operations.increment(&["reset_password", "success"]);
        operations.increment(&["reset_password", "success"]);
        operations.increment(&["unlock", "user_not_found"]);
        let latency = HistogramFamily::new(
            "writeback_operation_duration_seconds",
            "Operation latency.",
            &["operation"],
            &[0.1, 1.0],
        );
        latency.observe(&["reset_password"], 0.05);
        latency.observe(&["reset_password"], 0.5);
        latency.observe(&["reset_password"], 3.0);
        let mut out = String::new();
        operations.render(&mut out);
        latency.render(&mut out);
        render_gauge(
            "writeback_agents_connected",
            "Connected agents.",
            &["directory"],
            &[(vec!["co\"rp\n".into()], 2.0)],
            &mut out,
        );
        let expected = "\
# HELP writeback_operations_total Operations by kind and result.
# TYPE writeback_operations_total counter
writeback_operations_total{operation=\"reset_password\",result=\"success\"} 2
writeback_operations_total{operation=\"unlock\",result=\"user_not_found\"} 1
# HELP writeback_operation_duration_seconds Operation latency.
# TYPE writeback_operation_duration_seconds histogram
writeback_operation_duration_seconds_bucket{operation=\"reset_password\",le=\"0.1\"} 1
writeback_operation_duration_seconds_bucket{operation=\"reset_password\",le=\"1\"} 2
writeback_operation_duration_seconds_bucket{operation=\"reset_password\",le=\"+Inf\"} 3
writeback_operation_duration_seconds_sum{operation=\"reset_password\"} 3.55
writeback_operation_duration_seconds_count{operation=\"reset_password\"} 3
# HELP writeback_agents_connected Connected agents.
# TYPE writeback_agents_connected gauge
writeback_agents_connected{directory=\"co\\\"rp\\n\"} 2
";
        assert_eq!(out, expected);
        assert_eq!(operations.get(&["reset_password", "success"]), 2);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Undoes the label escaping.
        fn unescape(text: &str) -> String {
            let mut out = String::new();
            let mut characters = text.chars();
            while let Some(character) = characters.next() {
                match (character, character == '\\') {
                    (_, true) => match characters.next() {
                        Some('n') => out.push('\n'),
                        Some(other) => out.push(other),
                        None => {}
                    },
                    (other, false) => out.push(other),
                }
            }
            out
        }

        proptest! {
            /// Whatever a label holds, it stays one quoted value on one line and reads back.
            #[test]
            fn a_label_value_stays_one_value_on_one_line(value in "\\PC{0,60}|[\\\\\"\n]{0,10}") {
                let mut out = String::new();
                escape(&value, &mut out);
                prop_assert!(!out.contains('\n'));
                let unescaped_quotes = out
                    .char_indices()
                    .filter(|(index, character)| {
                        *character == '"'
                            && out[..*index].chars().rev().take_while(|c| *c == '\\').count() % 2 == 0
                    })
                    .count();
                prop_assert_eq!(unescaped_quotes, 0);
                prop_assert_eq!(unescape(&out), value);
            }
        }
    }
}
