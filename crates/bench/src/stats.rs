//! Latency samples: throughput and percentiles.

use std::time::Duration;

/// Latencies of one measured operation, pooled over rounds, and the wall time they took.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples {
    nanos: Vec<u64>,
    wall: Duration,
}

impl Samples {
    /// Adds one round: its latencies and its wall time.
    pub(crate) fn add_round(&mut self, latencies: impl IntoIterator<Item = u64>, wall: Duration) {
        self.nanos.extend(latencies);
        self.wall += wall;
    }

    /// How many operations were measured.
    pub(crate) fn count(&self) -> usize {
        self.nanos.len()
    }

    /// Operations per second over the measured wall time.
    pub(crate) fn ops_per_sec(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        to_f64(self.nanos.len()) / secs
    }

    /// The `q` quantile (0 to 1) in microseconds, nearest rank.
    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        if self.nanos.is_empty() {
            return 0.0;
        }
        let mut sorted = self.nanos.clone();
        sorted.sort_unstable();
        let rank = (q * to_f64(sorted.len())).ceil();
        let index = if rank <= 1.0 {
            0
        } else {
            // `rank` is at most `len`, so the conversion is exact.
            to_usize(rank).min(sorted.len()) - 1
        };
        to_f64_u64(sorted[index]) / 1000.0
    }

    /// The median in microseconds.
    pub(crate) fn p50_us(&self) -> f64 {
        self.quantile_us(0.50)
    }

    /// The 99th percentile in microseconds.
    pub(crate) fn p99_us(&self) -> f64 {
        self.quantile_us(0.99)
    }
}

/// Nanoseconds of a duration, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[allow(
    clippy::cast_precision_loss,
    reason = "sample counts and nanoseconds are far below 2^52"
)]
pub(crate) fn to_f64(n: usize) -> f64 {
    n as f64
}

#[allow(
    clippy::cast_precision_loss,
    reason = "latencies in nanoseconds are far below 2^52"
)]
pub(crate) fn to_f64_u64(n: u64) -> f64 {
    n as f64
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "callers pass small non-negative whole numbers"
)]
fn to_usize(v: f64) -> usize {
    v as usize
}

/// The median of a few values (the middle one, or the mean of the two middle ones).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut s = Samples::default();
        s.add_round((1..=100).map(|i| i * 1000), Duration::from_secs(2));
        assert_eq!(s.count(), 100);
        assert!((s.p50_us() - 50.0).abs() < f64::EPSILON);
        assert!((s.p99_us() - 99.0).abs() < f64::EPSILON);
        assert!((s.ops_per_sec() - 50.0).abs() < f64::EPSILON);
        assert!((s.quantile_us(0.0) - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn empty_samples_report_zero() {
        let s = Samples::default();
        assert!(s.p50_us().abs() < f64::EPSILON);
        assert!(s.ops_per_sec().abs() < f64::EPSILON);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert!((median(&mut [3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&mut [4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < f64::EPSILON);
    }
}
