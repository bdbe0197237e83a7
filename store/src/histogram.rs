//! Latency histograms in Prometheus' text format: the store's metrics layer and the filesystem's
//! `/metrics` share them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// A latency histogram with fixed buckets; lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn mean(&self) -> Duration {
        let n = self.count().max(1);
        Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed) / n)
    }

    /// Writes `name_bucket`, `name_sum` and `name_count` lines with `labels` (e.g. `op="get"`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += c.load(Ordering::Relaxed);
            out.push_str(&format!(
                "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}\n"
            ));
        }
        let count = self.count();
        out.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {count}\n"));
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        out.push_str(&format!(
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}\n"
        ));
    }
}

/// Times a scope into a histogram.
pub struct Timer<'a> {
    hist: &'a Histogram,
    start: Instant,
}

impl<'a> Timer<'a> {
    pub fn new(hist: &'a Histogram) -> Self {
        Timer {
            hist,
            start: Instant::now(),
        }
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.hist.observe(self.start.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(20));
        h.observe(Duration::from_millis(2));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "op=\"get\"");
        assert!(
            out.contains("x_seconds_bucket{op=\"get\",le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{op=\"get\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{op=\"get\"} 2\n"), "{out}");
    }
}
