//! `loadgen`: the load generator behind `bench/run.sh`.
//!
//! Every subcommand prints a human summary on stderr and one machine line
//! on stdout: `RESULT kind=… key=value …`.

mod ceiling;
mod client;
mod dpop;
mod flows;
mod oidc;
mod startup;
mod stats;

use anyhow::{bail, Context as _, Result};
use argon2::password_hash::{rand_core::OsRng, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use clap::{Args, Parser, Subcommand};
use client::{Conn, Target};
use flows::Flow;
use stats::Report;
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio::time::Instant;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for Castellan's HTTP benchmarks"
)]
struct Cli {
    /// Worker threads of the client's runtime (the server shares the machine).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// SSO round trips (login with CASTGC -> 302 with ST -> p3/serviceValidate).
    Sso(SsoArgs),
    /// Create N SSO sessions by password logins; report sessions/s.
    Sessions(SessionsArgs),
    /// Password logins (form dance) for a duration; report logins/s.
    Logins(LoginsArgs),
    /// Print an argon2id PHC hash of a password (stdin, or --password).
    Hash(HashArgs),
    /// Time from spawn to the first 200 on /health, over several starts.
    Startup(startup::StartupArgs),
    /// OAuth2 / OIDC grants: client-credentials, refresh or code round trips.
    Oidc(OidcArgs),
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
    /// Serve the like-for-like ceiling of the SSO loop (trivial handlers).
    Ceiling(ceiling::CeilingArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Base URL of the server, e.g. http://127.0.0.1:8443/cas
    #[arg(long)]
    url: String,
    /// Service URL the tickets are for (must match a registered service).
    #[arg(long, default_value = "https://app.example.org/home")]
    service: String,
    #[arg(long, default_value = "bench")]
    user: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
}

impl Common {
    fn flow(&self) -> Result<(Arc<Target>, Arc<Flow>)> {
        let target = Target::parse(&self.url)?;
        let flow = Arc::new(Flow::new(
            &target.path,
            &self.service,
            &self.user,
            &self.password,
        ));
        Ok((target, flow))
    }
}

#[derive(Args)]
struct SsoArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent keep-alive connections, each with its own SSO session.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds (after the logins and the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds of load before the measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Open loop: this many round trips per second in total, evenly paced;
    /// latency counts from the scheduled start when a connection falls behind.
    #[arg(long)]
    rate: Option<f64>,
    /// SSO sessions per connection, used in turn: the server sees
    /// connections × this many sessions.
    #[arg(long, default_value_t = 1)]
    sessions_per_connection: usize,
    /// Print round trips completed in each second of the run (stderr).
    #[arg(long)]
    timeline: bool,
    /// The server's process id (same machine): report its CPU time per
    /// round trip over the measured window, and the client's own.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Sessions made beforehand (e.g. with a second factor), one
    /// `USER<TAB>CASTGC=value` line each: connection i uses line i (modulo), and
    /// no connection logs in.
    #[arg(long)]
    sessions_from: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct SessionsArgs {
    #[command(flatten)]
    common: Common,
    /// Sessions to create.
    #[arg(long)]
    count: u64,
    /// Logins in flight at once (one keep-alive connection each).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Log in to the server itself (GET/POST /login, no service): sessions
    /// without a service ticket or single-logout record.
    #[arg(long)]
    without_service: bool,
}

#[derive(Args)]
struct LoginsArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Logins in flight at once (one keep-alive connection each).
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OidcMode {
    /// POST /oidc/token grant_type=client_credentials.
    ClientCredentials,
    /// POST /oidc/token grant_type=refresh_token, rotating the token.
    Refresh,
    /// authorize -> /login with CASTGC -> callback -> code -> token.
    Code,
    /// SAML: Redirect AuthnRequest -> /login with CASTGC -> callback -> signed Response page.
    Saml,
}

#[derive(Args)]
struct OidcArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum)]
    mode: OidcMode,
    #[arg(long, default_value = "bench")]
    client_id: String,
    #[arg(long, default_value = "bench-secret")]
    client_secret: String,
    #[arg(long, default_value = "https://rp.example.org/callback")]
    redirect_uri: String,
    /// Authenticate with private_key_jwt: ES256 assertions signed with this
    /// P-256 PKCS#8 PEM key (instead of client_secret_post).
    #[arg(long)]
    assertion_key: Option<std::path::PathBuf>,
    /// The key's `kid` in the client's registered JWK Set.
    #[arg(long, default_value = "bench-key")]
    assertion_kid: String,
    /// Assertions signed before the measurement (the rest are signed as
    /// they are needed, on the load generator's CPU).
    #[arg(long, default_value_t = 0)]
    presign: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds of load first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// SAML mode: the SP's entityID and ACS URL (registered with the server).
    #[arg(long, default_value = "https://sp.example.org/shibboleth")]
    sp_entity: String,
    /// Refresh and client-credentials modes: send a DPoP proof (RFC 9449,
    /// ES256, a key per connection) for this token endpoint URL (the
    /// server's issuer + /token) with every grant.
    #[arg(long)]
    dpop: Option<String>,
    #[arg(
        long,
        default_value = "https://sp.example.org/Shibboleth.sso/SAML2/POST"
    )]
    acs: String,
    /// The server's process id (same machine): its CPU time per grant or
    /// round trip over the measured window, and the client's own.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args)]
struct HashArgs {
    /// Cheap parameters (m=8 KiB, t=1, p=1) for benchmark users only.
    #[arg(long)]
    cheap: bool,
    /// The password; read from the first line of stdin when absent.
    #[arg(long)]
    password: Option<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Hash(args) => hash(&args),
        Command::Startup(args) => startup::run(&args),
        Command::Ceiling(args) => ceiling::run(&args),
        Command::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            Ok(())
        }
        command => {
            let runtime = if cli.threads <= 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(cli.threads)
                    .enable_all()
                    .build()?
            };
            let report = runtime.block_on(async move {
                match command {
                    Command::Sso(a) => sso(a).await,
                    Command::Sessions(a) => sessions(a).await,
                    Command::Logins(a) => logins(a).await,
                    Command::Oidc(a) => oidc_load(a).await,
                    _ => unreachable!(),
                }
            })?;
            report.print();
            if report.ok == 0 {
                bail!("nothing succeeded");
            }
            Ok(())
        }
    }
}

fn hash(args: &HashArgs) -> Result<()> {
    let password = match &args.password {
        Some(p) => p.clone(),
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.lines().next().unwrap_or("").to_owned()
        }
    };
    if password.is_empty() {
        bail!("empty password");
    }
    let argon = if args.cheap {
        let params = Params::new(8, 1, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    } else {
        Argon2::default()
    };
    let salt = SaltString::generate(&mut OsRng);
    let phc = argon
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{phc}");
    Ok(())
}

/// Per-worker tallies, merged at the end.
struct Tally {
    ok: u64,
    errors: u64,
    latency: hdrhistogram::Histogram<u64>,
    first_error: Option<String>,
    connects: u64,
    /// Open loop: how far behind schedule the worker ended.
    behind: Duration,
}

impl Tally {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: 0,
            latency: stats::histogram(),
            first_error: None,
            connects: 0,
            behind: Duration::ZERO,
        }
    }

    fn error(&mut self, e: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        let _ = self.latency.add(&other.latency);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.connects += other.connects;
        self.behind = self.behind.max(other.behind);
    }
}

async fn sso(args: SsoArgs) -> Result<Report> {
    let (target, flow) = args.common.flow()?;
    let made: Vec<(String, String)> = match &args.sessions_from {
        None => Vec::new(),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(u, c)| (u.to_owned(), c.trim().to_owned()))
            .collect(),
    };
    if args.sessions_from.is_some() && made.is_empty() {
        anyhow::bail!("--sessions-from: no USER<TAB>CASTGC line");
    }
    let n = args.connections.max(1);
    let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    let duration = Duration::from_secs_f64(args.duration);
    // Everyone logs in, then all start together.
    let ready = Arc::new(Barrier::new(n + 1));
    let (start_tx, start_rx) = tokio::sync::watch::channel(None::<Instant>);
    let logins_failed = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        let target = target.clone();
        let (flow, made) = match made.get(i % made.len().max(1)) {
            Some((user, cookie)) => (Arc::new(flow.for_user(user)), Some(cookie.clone())),
            None => (flow.clone(), None),
        };
        let ready = ready.clone();
        let mut start_rx = start_rx.clone();
        let logins_failed = logins_failed.clone();
        let completed = completed.clone();
        let rate = args.rate;
        let sessions = args.sessions_per_connection.max(1);
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let mut conn = Conn::new(target);
            // Each connection is a browser that holds `sessions` SSO cookies
            // and uses them in turn (1 = one long-lived session).
            let mut cookies = Vec::with_capacity(sessions);
            cookies.extend(made);
            let mut failures = 0;
            while cookies.len() < sessions && failures < 3 {
                match flows::login(&mut conn, &flow).await {
                    Ok(l) => {
                        // The first ticket came with the login; validating it proves the flow.
                        if let Err(e) = flows::validate(&mut conn, &flow, &l.ticket).await {
                            tally.error(e.context("validating the login's own ticket"));
                        }
                        cookies.push(l.cookie);
                    }
                    Err(e) => {
                        failures += 1;
                        tally.error(e);
                    }
                }
            }
            ready.wait().await;
            if cookies.is_empty() {
                logins_failed.fetch_add(1, Ordering::Relaxed);
                return tally;
            }
            let mut turn = 0usize;
            let mut next_cookie = move || {
                turn = turn.wrapping_add(1);
                cookies[turn % cookies.len()].clone()
            };
            let start = loop {
                if let Some(s) = *start_rx.borrow_and_update() {
                    break s;
                }
                if start_rx.changed().await.is_err() {
                    return tally;
                }
            };
            let measure_from = start + warmup;
            let end = measure_from + duration;
            let mut warm = Tally::new();
            match rate {
                None => loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let cookie = next_cookie();
                    let outcome = flows::sso_round_trip(&mut conn, &flow, &cookie).await;
                    completed.fetch_add(1, Ordering::Relaxed);
                    let into = if t0 >= measure_from {
                        &mut tally
                    } else {
                        &mut warm
                    };
                    match outcome {
                        Ok(()) => {
                            into.ok += 1;
                            stats::record(&mut into.latency, t0.elapsed());
                        }
                        Err(e) => into.error(e),
                    }
                },
                Some(total_rate) => {
                    let interval = Duration::from_secs_f64(n as f64 / total_rate);
                    // Stagger the connections across one interval.
                    let mut next = start + interval.mul_f64(i as f64 / n as f64);
                    while next < end {
                        let now = Instant::now();
                        // Idle connection: wait for the slot and time from the
                        // real send (timer slack is the client's, not the
                        // server's). Behind schedule: send now and time from
                        // the slot, so queueing behind a slow answer counts.
                        let t0 = if now < next {
                            tokio::time::sleep_until(next).await;
                            Instant::now()
                        } else {
                            next
                        };
                        let cookie = next_cookie();
                        let outcome = flows::sso_round_trip(&mut conn, &flow, &cookie).await;
                        completed.fetch_add(1, Ordering::Relaxed);
                        let into = if next >= measure_from {
                            &mut tally
                        } else {
                            &mut warm
                        };
                        match outcome {
                            Ok(()) => {
                                into.ok += 1;
                                stats::record(&mut into.latency, t0.elapsed());
                            }
                            Err(e) => into.error(e),
                        }
                        next += interval;
                    }
                    tally.behind = Instant::now().saturating_duration_since(end);
                }
            }
            if tally.first_error.is_none() {
                tally.first_error = warm.first_error;
            }
            tally.errors += warm.errors;
            tally.connects = conn.connects;
            tally
        }));
    }
    ready.wait().await;
    let failed = logins_failed.load(Ordering::Relaxed);
    if failed as usize == n {
        // Let the workers finish so their first error is reported.
        drop(start_tx);
        let mut total = Tally::new();
        for w in workers {
            total.merge(w.await?);
        }
        bail!(
            "every login failed: {}",
            total.first_error.unwrap_or_default()
        );
    }
    let start = Instant::now();
    start_tx.send(Some(start)).ok();
    let cpu_window = args
        .server_pid
        .map(|pid| cpu_window(pid, start + warmup, start + warmup + duration));
    if args.timeline {
        let completed = completed.clone();
        let total_secs = (warmup + duration).as_secs_f64().ceil() as u64;
        tokio::spawn(async move {
            let mut last = 0;
            for second in 1..=total_secs {
                tokio::time::sleep_until(start + Duration::from_secs(second)).await;
                let now = completed.load(Ordering::Relaxed);
                eprintln!("  t={second:>3}s  {:>7} round trips/s", now - last);
                last = now;
            }
        });
    }
    let mut total = Tally::new();
    for w in workers {
        total.merge(w.await?);
    }
    let mut extra = vec![
        ("connections".to_owned(), n.to_string()),
        (
            "sessions".to_owned(),
            (n * args.sessions_per_connection.max(1)).to_string(),
        ),
        ("logins_failed".to_owned(), failed.to_string()),
        ("tcp_connects".to_owned(), total.connects.to_string()),
    ];
    if let Some(window) = cpu_window {
        cpu_figures(window.await?, total.ok, &mut extra);
    }
    if let Some(r) = args.rate {
        extra.push(("target_rate".to_owned(), format!("{r:.1}")));
        extra.push((
            "behind_ms".to_owned(),
            format!("{:.1}", total.behind.as_secs_f64() * 1000.0),
        ));
    }
    Ok(Report {
        what: "sso",
        ok: total.ok,
        errors: total.errors,
        elapsed: duration,
        latency: total.latency,
        first_error: total.first_error,
        extra,
    })
}

/// User + system CPU seconds of a process, from its `/proc/…/stat`.
fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, in USER_HZ ticks (100 on Linux).
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

async fn sessions(args: SessionsArgs) -> Result<Report> {
    let (target, flow) = args.common.flow()?;
    let count = args.count;
    let next = Arc::new(AtomicU64::new(0));
    let for_service = !args.without_service;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (target, flow, next) = (target.clone(), flow.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let mut conn = Conn::new(target);
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let t0 = Instant::now();
                match flows::login_at(&mut conn, &flow, for_service).await {
                    Ok(_) => {
                        tally.ok += 1;
                        stats::record(&mut tally.latency, t0.elapsed());
                    }
                    Err(e) => {
                        tally.error(e);
                        // A server that fails every login must not spin us.
                        if tally.errors > 1000 && tally.ok == 0 {
                            break;
                        }
                    }
                }
            }
            tally.connects = conn.connects;
            tally
        }));
    }
    let mut total = Tally::new();
    for w in workers {
        total.merge(w.await?);
    }
    Ok(Report {
        what: "sessions",
        ok: total.ok,
        errors: total.errors,
        elapsed: started.elapsed(),
        latency: total.latency,
        first_error: total.first_error,
        extra: vec![
            ("concurrency".to_owned(), args.concurrency.to_string()),
            ("with_service".to_owned(), for_service.to_string()),
            ("tcp_connects".to_owned(), total.connects.to_string()),
        ],
    })
}

/// CPU seconds the server (`pid`) and this process spend between `from`
/// and `to`.
fn cpu_window(pid: u32, from: Instant, to: Instant) -> tokio::task::JoinHandle<Option<(f64, f64)>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from).await;
        let before = (
            cpu_seconds(&format!("/proc/{pid}/stat")),
            cpu_seconds("/proc/self/stat"),
        );
        tokio::time::sleep_until(to).await;
        let after = (
            cpu_seconds(&format!("/proc/{pid}/stat")),
            cpu_seconds("/proc/self/stat"),
        );
        match (before, after) {
            ((Some(s0), Some(c0)), (Some(s1), Some(c1))) => Some((s1 - s0, c1 - c0)),
            _ => None,
        }
    })
}

/// `server_cpu_s`, `server_cpu_us_per_rt` and `client_cpu_us_per_rt`.
fn cpu_figures(window: Option<(f64, f64)>, ok: u64, extra: &mut Vec<(String, String)>) {
    if let Some((server_s, client_s)) = window {
        let per = |cpu: f64| cpu * 1e6 / (ok.max(1) as f64);
        extra.push(("server_cpu_s".to_owned(), format!("{server_s:.2}")));
        extra.push((
            "server_cpu_us_per_rt".to_owned(),
            format!("{:.1}", per(server_s)),
        ));
        extra.push((
            "client_cpu_us_per_rt".to_owned(),
            format!("{:.1}", per(client_s)),
        ));
    }
}

async fn oidc_load(args: OidcArgs) -> Result<Report> {
    let (target, flow) = args.common.flow()?;
    let assertions = match &args.assertion_key {
        None => None,
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            // The assertion's aud: the token endpoint (--url is the public URL).
            let aud = format!("{}/oidc/token", args.common.url.trim_end_matches('/'));
            let a = oidc::Assertions::new(&pem, &args.assertion_kid, &args.client_id, &aud)?;
            a.presign(args.presign);
            Some(a)
        }
    };
    let client = Arc::new(oidc::Client {
        oidc: format!("{}/oidc", target.path),
        client_id: args.client_id.clone(),
        client_secret: args.client_secret.clone(),
        redirect_uri: args.redirect_uri.clone(),
        assertions,
    });
    let n = args.connections.max(1);
    let ready = Arc::new(Barrier::new(n + 1));
    let (start_tx, start_rx) = tokio::sync::watch::channel(None::<Instant>);
    let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
    let duration = Duration::from_secs_f64(args.duration);
    let mode = args.mode;
    let mut workers = Vec::with_capacity(n);
    for _ in 0..n {
        let (target, flow, client, ready) =
            (target.clone(), flow.clone(), client.clone(), ready.clone());
        let (base_path, sp_entity, acs) = (
            target.path.clone(),
            args.sp_entity.clone(),
            args.acs.clone(),
        );
        let mut start_rx = start_rx.clone();
        let dpop_htu = args.dpop.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let mut conn = Conn::new(target);
            let mut prover = dpop_htu.as_deref().map(dpop::Prover::new);
            // Set up: an SSO session, and a grant to refresh.
            let mut cookie = String::new();
            let mut refresh = String::new();
            let mut counter = 0u64;
            if mode == OidcMode::Saml {
                match oidc::sso_cookie(&mut conn, &flow).await {
                    Ok(c) => cookie = c,
                    Err(e) => tally.error(e.context("logging in")),
                }
            } else if mode != OidcMode::ClientCredentials {
                let setup = async {
                    let c = oidc::sso_cookie(&mut conn, &flow).await?;
                    let r = oidc::code_round_trip(&mut conn, &client, &c).await?;
                    Ok::<_, anyhow::Error>((c, r))
                }
                .await;
                match setup {
                    Ok((c, r)) => (cookie, refresh) = (c, r),
                    Err(e) => tally.error(e.context("setting up the grant")),
                }
            }
            ready.wait().await;
            if mode != OidcMode::ClientCredentials && cookie.is_empty() {
                return tally;
            }
            let start = loop {
                if let Some(s) = *start_rx.borrow_and_update() {
                    break s;
                }
                if start_rx.changed().await.is_err() {
                    return tally;
                }
            };
            let measure_from = start + warmup;
            let end = measure_from + duration;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                if let Some(p) = prover.as_mut() {
                    conn.dpop = Some(p.proof());
                }
                let outcome = match mode {
                    OidcMode::ClientCredentials => {
                        oidc::client_credentials(&mut conn, &client).await
                    }
                    OidcMode::Refresh => oidc::refresh(&mut conn, &client, &refresh)
                        .await
                        .map(|r| refresh = r),
                    OidcMode::Code => oidc::code_round_trip(&mut conn, &client, &cookie)
                        .await
                        .map(|_| ()),
                    OidcMode::Saml => {
                        counter += 1;
                        oidc::saml_round_trip(
                            &mut conn, &base_path, &sp_entity, &acs, &cookie, counter,
                        )
                        .await
                    }
                };
                if t0 < measure_from {
                    if let Err(e) = outcome {
                        tally.error(e);
                        if mode == OidcMode::Refresh {
                            break;
                        }
                    }
                    continue;
                }
                match outcome {
                    Ok(()) => {
                        tally.ok += 1;
                        stats::record(&mut tally.latency, t0.elapsed());
                    }
                    Err(e) => {
                        tally.error(e);
                        // A failed refresh leaves no token to go on with.
                        if mode == OidcMode::Refresh {
                            break;
                        }
                    }
                }
            }
            tally.connects = conn.connects;
            tally
        }));
    }
    ready.wait().await;
    let start = Instant::now();
    let _ = start_tx.send(Some(start));
    let window = args
        .server_pid
        .map(|pid| cpu_window(pid, start + warmup, start + warmup + duration));
    let mut total = Tally::new();
    for w in workers {
        total.merge(w.await.context("oidc worker")?);
    }
    let mut extra = vec![("connections".to_owned(), n.to_string())];
    if let Some(window) = window {
        cpu_figures(window.await?, total.ok, &mut extra);
    }
    let what = match mode {
        OidcMode::ClientCredentials => "oidc client_credentials grants",
        OidcMode::Refresh => "oidc refresh grants",
        OidcMode::Code => "oidc code round trips",
        OidcMode::Saml => "saml sso round trips",
    };
    Ok(Report {
        what,
        ok: total.ok,
        errors: total.errors,
        elapsed: duration,
        latency: total.latency,
        first_error: total.first_error,
        extra,
    })
}

async fn logins(args: LoginsArgs) -> Result<Report> {
    let (target, flow) = args.common.flow()?;
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    let mut workers = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (target, flow) = (target.clone(), flow.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let mut conn = Conn::new(target);
            while Instant::now() < end {
                let t0 = Instant::now();
                match flows::login(&mut conn, &flow).await {
                    Ok(_) => {
                        tally.ok += 1;
                        stats::record(&mut tally.latency, t0.elapsed());
                    }
                    Err(e) => tally.error(e),
                }
            }
            tally.connects = conn.connects;
            tally
        }));
    }
    let mut total = Tally::new();
    for w in workers {
        total.merge(w.await.context("login worker")?);
    }
    Ok(Report {
        what: "logins",
        ok: total.ok,
        errors: total.errors,
        // Logins in flight at the deadline finish after it and count.
        elapsed: started.elapsed(),
        latency: total.latency,
        first_error: total.first_error,
        extra: vec![("connections".to_owned(), args.connections.to_string())],
    })
}
