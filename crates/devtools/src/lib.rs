//! What the benchmark programs share (their command-line numbers and their percentiles), and
//! the Debian packages `cargo xtask package` builds.

pub mod package;

use std::time::Duration;

use anyhow::{Context, Result};

/// The number after `name` on the command line, or `default`.
pub fn argument(name: &str, default: usize) -> Result<usize> {
    match std::env::args()
        .skip_while(|argument| argument != name)
        .nth(1)
    {
        Some(value) => value
            .parse()
            .with_context(|| format!("{name} takes a number")),
        None => Ok(default),
    }
}

/// Nearest-rank percentile of sorted samples; `None` when there are none.
pub fn nearest_rank<T: Copy>(sorted: &[T], fraction: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Nearest-rank percentile of sorted durations, in milliseconds; not a number when there are
/// none.
pub fn percentile_ms(sorted: &[Duration], fraction: f64) -> f64 {
    nearest_rank(sorted, fraction).map_or(f64::NAN, |sample| sample.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_the_sample_at_or_above_the_fraction() {
        let samples = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(nearest_rank(&samples, 0.5), Some(5));
        assert_eq!(nearest_rank(&samples, 0.99), Some(10));
        assert_eq!(nearest_rank(&samples, 0.0), Some(1));
        assert_eq!(nearest_rank::<u8>(&[], 0.5), None);
    }
}
