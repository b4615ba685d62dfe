//! Counters exposed at `/metrics` in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($field:ident => $help:literal),* $(,)?) => {
        #[derive(Default)]
        pub struct Metrics { $(pub $field: AtomicU64,)* }

        impl Metrics {
            fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($field), $help, self.$field.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    logins_succeeded => "Password logins that opened an SSO session",
    logins_failed => "Password logins refused for wrong credentials",
    logins_throttled => "Password logins refused by throttling",
    service_tickets_granted => "Service tickets granted",
    validations_succeeded => "Ticket validations that succeeded",
    validations_failed => "Ticket validations that failed",
    proxy_tickets_granted => "Proxy tickets granted",
    logouts => "SSO sessions ended by logout",
    store_errors => "Requests that failed because the ticket store failed",
    oidc_codes_issued => "OIDC authorization codes issued",
    oidc_tokens_issued => "Successful OAuth2 token endpoint responses",
    saml_responses_issued => "SAML Responses with an assertion issued",
}

/// One counter kept elsewhere, in the same text format.
pub fn render_counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP castellan_{name}_total {help}");
    let _ = writeln!(out, "# TYPE castellan_{name}_total counter");
    let _ = writeln!(out, "castellan_{name}_total {value}");
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition; `gauges` are sampled by the caller.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::with_capacity(2048);
        for (name, help, value) in self.counters() {
            render_counter(&mut out, name, help, value);
        }
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP castellan_{name} {help}");
            let _ = writeln!(out, "# TYPE castellan_{name} gauge");
            let _ = writeln!(out, "castellan_{name} {value}");
        }
        let _ = writeln!(out, "# HELP castellan_build_info Build information");
        let _ = writeln!(out, "# TYPE castellan_build_info gauge");
        let _ = writeln!(
            out,
            "castellan_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// The generation in force and how the last reload went (`/metrics`).
#[derive(Debug)]
pub struct ReloadStatus {
    generation: AtomicU64,
    /// Unix seconds of the last reload attempt; 0 before any.
    last_at: AtomicU64,
    last_ok: AtomicU64,
}

impl Default for ReloadStatus {
    fn default() -> Self {
        Self {
            generation: AtomicU64::new(1),
            last_at: AtomicU64::new(0),
            last_ok: AtomicU64::new(1),
        }
    }
}

impl ReloadStatus {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn attempted(&self, ok: bool) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.last_at.store(now, Ordering::Relaxed);
        self.last_ok.store(u64::from(ok), Ordering::Relaxed);
        if ok {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The gauges `/metrics` shows.
    pub fn gauges(&self) -> [(&'static str, &'static str, u64); 3] {
        [
            (
                "config_generation",
                "Configuration generation in force (1 at start, +1 per successful reload)",
                self.generation(),
            ),
            (
                "config_last_reload_timestamp_seconds",
                "Unix time of the last reload attempt (0: none yet)",
                self.last_at.load(Ordering::Relaxed),
            ),
            (
                "config_last_reload_success",
                "Whether the last reload attempt succeeded (1) or was refused (0)",
                self.last_ok.load(Ordering::Relaxed),
            ),
        ]
    }
}
