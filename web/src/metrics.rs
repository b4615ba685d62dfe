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
