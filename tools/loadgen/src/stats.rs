//! Latency histograms (microseconds) and the report lines.

use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::time::Duration;

pub fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant figures.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, 60_000_000);
    h.saturating_record(us);
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One run's outcome, printed for people (stderr) and scripts (stdout).
pub struct Report {
    pub what: &'static str,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
    pub first_error: Option<String>,
    /// Extra `key=value` pairs for the script line.
    pub extra: Vec<(String, String)>,
}

impl Report {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn print(&self) {
        let h = &self.latency;
        let mut human = format!(
            "{}: {} ok, {} errors in {:.2} s = {:.1}/s",
            self.what,
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.rate()
        );
        if !h.is_empty() {
            let _ = write!(
                human,
                "\n  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.90)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
                h.mean() / 1000.0
            );
        }
        for (k, v) in &self.extra {
            let _ = write!(human, "\n  {k}: {v}");
        }
        if let Some(e) = &self.first_error {
            let _ = write!(human, "\n  first error: {e}");
        }
        eprintln!("{human}");

        let mut line = format!(
            "RESULT kind={} ok={} errors={} elapsed_s={:.3} rate={:.1}",
            self.what,
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.rate()
        );
        if !h.is_empty() {
            let _ = write!(
                line,
                " p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} mean_ms={:.3}",
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.90)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
                h.mean() / 1000.0
            );
        }
        for (k, v) in &self.extra {
            let _ = write!(line, " {k}={v}");
        }
        println!("{line}");
    }
}
