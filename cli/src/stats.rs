//! Small summary statistics for latency samples.

use serde::Serialize;

/// Median and 99th percentile of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Number of samples summarised.
    pub count: usize,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

/// The q-quantile (0 <= q <= 1) by the nearest-rank method on a sorted slice.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Latency {
    /// Summarises `samples_ms`; NaN figures when it is empty.
    pub fn of(samples_ms: &[f64]) -> Self {
        let mut sorted = samples_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mean = if sorted.is_empty() {
            f64::NAN
        } else {
            sorted.iter().sum::<f64>() / sorted.len() as f64
        };
        Self {
            count: sorted.len(),
            median_ms: quantile_sorted(&sorted, 0.5),
            p99_ms: quantile_sorted(&sorted, 0.99),
            mean_ms: mean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let samples: Vec<f64> = (1..=200).map(f64::from).collect();
        let l = Latency::of(&samples);
        assert_eq!(l.count, 200);
        assert_eq!(l.median_ms, 100.0);
        assert_eq!(l.p99_ms, 198.0);
        assert_eq!(l.mean_ms, 100.5);
        assert_eq!(Latency::of(&[3.0]).p99_ms, 3.0);
        assert!(Latency::of(&[]).median_ms.is_nan());
    }
}
