//! The `castellan` binary: `serve`, `check-config`, `hash-password`, and
//! the operator's commands.

mod admin;
mod app;
mod cas_endpoints;
mod client_address;
mod config;
mod consent_page;
mod cookies;
mod delegation;
#[cfg(test)]
mod layering;
mod locale;
mod login;
mod logout;
mod metrics;
mod mfa_page;
mod middleware;
mod oidc;
mod oidc_cors;
mod operations;
mod pages;
mod reload;
mod respond;
mod saml;
mod second_step;
mod server;
mod sign_in;
mod state;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "castellan",
    version,
    about = "Castellan identity provider gateway (CAS, SAML 2.0, OAuth 2.0, OpenID Connect)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded demo defaults when no configuration is given).
    Serve {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Parse and validate a configuration file; print every problem.
    CheckConfig {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: PathBuf,
        /// Also reach each of [[authenticators]] (connect and bind as the
        /// service account, or anonymously).
        #[arg(long)]
        probe: bool,
    },
    /// Read a password on stdin and print an argon2id PHC string for `password_hash`.
    HashPassword,
    /// Manage the token signing keys in data_dir.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Delegated authentication: check the configured upstreams.
    Upstreams {
        #[command(subcommand)]
        command: UpstreamsCommand,
    },
    /// Directories and databases ([[authenticators]]).
    Authenticators {
        #[command(subcommand)]
        command: AuthenticatorsCommand,
    },
    /// Users' second factors ([mfa]).
    Mfa {
        #[command(subcommand)]
        command: MfaCommand,
    },
    /// Make the running server re-read its configuration file (as SIGHUP
    /// does) and print what it said: the new generation, or the problems
    /// that kept the running configuration in force.
    Reload {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// A user's SSO sessions on the running server (support desk).
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// The service registry, as the configuration file writes it.
    Services {
        #[command(subcommand)]
        command: ServicesCommand,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// Print USER's live sessions: since when, until when, how they signed in.
    List {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: Option<PathBuf>,
        user: String,
    },
    /// End every session of USER; their applications get single logout.
    End {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: Option<PathBuf>,
        user: String,
    },
}

#[derive(Subcommand)]
enum ServicesCommand {
    /// Which registered service URL matches (a CAS service URL, an OIDC
    /// redirect URI or client id, a SAML entity ID or ACS URL), with which
    /// protocol, what it is released and its policies. Exits non-zero when
    /// none does.
    Test {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: PathBuf,
        url: String,
    },
}

#[derive(Subcommand)]
enum MfaCommand {
    /// Print USER's second factors (id, kind, label, added, last used) and
    /// how many recovery codes are left.
    List {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: Option<PathBuf>,
        user: String,
    },
    /// Remove every second factor and recovery code of USER (a lost phone):
    /// their next login to a service that requires one enrols anew.
    Reset {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: Option<PathBuf>,
        user: String,
    },
}

#[derive(Subcommand)]
enum AuthenticatorsCommand {
    /// Sign USERNAME in at one source (the password on stdin) and say what
    /// it answered and which attributes came back. Exits non-zero unless
    /// the password was accepted.
    Test {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: PathBuf,
        name: String,
        username: String,
    },
}

#[derive(Subcommand)]
enum UpstreamsCommand {
    /// Reach an upstream now (CAS login page, OIDC discovery and keys,
    /// OAuth2 authorize URL; a SAML IdP's metadata as configured) and say
    /// what it answered. Exits non-zero when it cannot be used.
    Test {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: PathBuf,
        /// The upstream's name (all of them when absent).
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new active key pair; the old keys stay published for a while.
    /// Running nodes sharing data_dir pick the new keys up within seconds.
    Rotate {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: Option<PathBuf>,
        /// How long the old keys stay in the JWKS: the longest token lifetime.
        #[arg(long, default_value = "24h")]
        publish_old_for: String,
    },
    /// Print the key ids: active first, then those still published.
    List {
        #[arg(long, env = "CASTELLAN_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (`_RJEM_MALLOC_CONF`
/// in the environment still overrides them). By default freed pages go back
/// to the system only as later allocations pass by, over 10 s: an idle
/// server kept the memory of 100,000 expired tickets, ~9 MB. A background
/// thread now returns them within about a second (BENCHMARKS.md, issue 15).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::CheckConfig { config, probe } => check_config(&config, probe),
        Command::HashPassword => hash_password(),
        Command::Keys { command } => keys(command),
        Command::Upstreams {
            command: UpstreamsCommand::Test { config, name },
        } => upstreams_test(&config, name.as_deref()),
        Command::Authenticators {
            command:
                AuthenticatorsCommand::Test {
                    config,
                    name,
                    username,
                },
        } => authenticators_test(&config, &name, &username),
        Command::Mfa { command } => mfa(command),
        Command::Reload { config } => admin_command(config.as_deref(), "reload".into()),
        Command::Sessions {
            command: SessionsCommand::List { config, user },
        } => admin_command(config.as_deref(), format!("sessions list {user}")),
        Command::Sessions {
            command: SessionsCommand::End { config, user },
        } => admin_command(config.as_deref(), format!("sessions end {user}")),
        Command::Services {
            command: ServicesCommand::Test { config, url },
        } => services_test(&config, &url),
    }
}

/// Sends one command to the running server named by the configuration.
fn admin_command(config: Option<&Path>, command: String) -> ExitCode {
    if command.contains('\n') {
        eprintln!("a user name is one line");
        return ExitCode::from(2);
    }
    let located = match config {
        Some(path) => config::locate(path),
        None => config::embedded_defaults()
            .map(|s| (s.data_dir, s.listen))
            .map_err(|e| e.to_string()),
    };
    let socket = match located {
        Ok((data_dir, listen)) => admin::AdminSocket::of(&data_dir, listen),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match admin::request(&socket, &command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn services_test(config: &Path, url: &str) -> ExitCode {
    let settings = match config::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let list = |v: &[String]| {
        if v.is_empty() {
            "(nothing)".to_owned()
        } else {
            v.join(", ")
        }
    };
    let registry = castellan_core::ServiceRegistry::new(settings.services.clone());
    let found: Option<(&str, Vec<String>, _, _)> = if let Some(s) = registry.find(url) {
        Some((
            &s.name,
            vec![
                "protocol: cas".into(),
                format!("pattern: {}", s.pattern.as_str()),
                format!("release: {}", list(&s.release)),
                format!(
                    "proxy: {}",
                    s.proxy_callback
                        .as_ref()
                        .map_or("not allowed", |p| p.as_str())
                ),
                format!("single logout: {:?}", s.logout),
            ],
            s.mfa,
            s.consent,
        ))
    } else if let Some(c) = settings
        .oidc
        .clients
        .iter()
        .find(|c| c.client_id == url || c.redirect_uris.iter().any(|r| r == url))
    {
        Some((
            &c.name,
            vec![
                "protocol: oidc".into(),
                format!("client_id: {}", c.client_id),
                format!("scopes: {}", list(&c.scopes)),
                format!("release: {}", list(&c.release)),
            ],
            c.mfa,
            c.consent,
        ))
    } else {
        settings
            .saml
            .sps
            .iter()
            .find(|sp| sp.entity_id == url || sp.acs.iter().any(|a| a.url == url))
            .map(|sp| {
                (
                    sp.name.as_str(),
                    vec![
                        "protocol: saml".into(),
                        format!("entity_id: {}", sp.entity_id),
                        format!("release: {}", list(&sp.release)),
                        format!("name_id_format: {}", sp.name_id_format),
                    ],
                    sp.mfa,
                    sp.consent,
                )
            })
    };
    let Some((name, lines, mfa, consent)) = found else {
        println!("no registered service matches {url}: Castellan refuses it");
        return ExitCode::FAILURE;
    };
    println!("service: {name}");
    for line in lines {
        println!("{line}");
    }
    println!(
        "mfa: {}",
        match mfa {
            Some(castellan_core::MfaPolicy::Required) => "required",
            Some(castellan_core::MfaPolicy::Optional) => "optional",
            None => "none",
        }
    );
    match consent {
        Some(ttl) => println!("consent: asked, remembered {}s", ttl.as_secs()),
        None => println!("consent: not asked"),
    }
    if let Some(theme) = settings.themes.get(name) {
        if let Some(display) = &theme.display_name {
            println!("display name: {display}");
        }
        if let Some(color) = &theme.accent_color {
            println!("accent colour: {color}");
        }
        println!("logo: {}", if theme.logo.is_some() { "yes" } else { "no" });
    }
    ExitCode::SUCCESS
}

/// `castellan mfa list|reset USER`: the factor store, as the server opens it.
fn mfa(command: MfaCommand) -> ExitCode {
    let (config, user, reset) = match command {
        MfaCommand::List { config, user } => (config, user, false),
        MfaCommand::Reset { config, user } => (config, user, true),
    };
    let Some(runtime) = current_thread_runtime() else {
        return ExitCode::FAILURE;
    };
    let outcome = settings_or_defaults(config.as_deref()).and_then(|settings| {
        runtime.block_on(async {
            let factors = castellan_mfa::Factors::open(state::mfa_settings(&settings))
                .await
                .map_err(|e| format!("opening the MFA store: {e}"))?;
            let result = if reset {
                factors.reset(&user).await.map(|n| {
                    println!("removed {n} second factor(s) and the recovery codes of {user}");
                    tracing::warn!(user = %user, factors = n, "second factors reset by the operator");
                })
            } else {
                factors.list(&user).await.map(|e| {
                    if e.factors.is_empty() {
                        println!("{user} has no second factor");
                    }
                    for f in &e.factors {
                        let kind = match f.kind {
                            castellan_mfa::FactorKind::Totp => "totp",
                            castellan_mfa::FactorKind::Passkey { hardware: true } => "security-key",
                            castellan_mfa::FactorKind::Passkey { hardware: false } => "passkey",
                        };
                        let used = f.last_used_at.map(unix_date).unwrap_or_else(|| "never".into());
                        println!("{}\t{kind}\t{}\tadded {}\tlast used {used}", f.id, f.label, unix_date(f.created_at));
                    }
                    println!("recovery codes left: {}", e.recovery_codes_left);
                })
            };
            factors.close().await;
            result.map_err(|e| e.to_string())
        })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn unix_date(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn current_thread_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
}

/// `check-config --probe`: each authenticator reached as the server would.
fn probe_authenticators(settings: &config::Settings) -> bool {
    let Some(runtime) = current_thread_runtime() else {
        return false;
    };
    let mut ok = true;
    for s in &settings.authenticators {
        let outcome = castellan_authenticators::Source::build(s);
        let outcome = match outcome {
            Ok(source) => runtime.block_on(source.probe()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(line) => println!("authenticator {}: ok: {line}", s.name()),
            Err(e) => {
                ok = false;
                println!("authenticator {}: FAILED: {e}", s.name());
            }
        }
    }
    ok
}

fn authenticators_test(config: &Path, name: &str, username: &str) -> ExitCode {
    let settings = match config::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Some(chosen) = settings.authenticators.iter().find(|s| s.name() == name) else {
        eprintln!("no authenticator named {name:?} in {}", config.display());
        return ExitCode::from(2);
    };
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    let credentials = castellan_core::Credentials {
        username: username.to_owned(),
        password: input.lines().next().unwrap_or("").to_owned(),
    };
    let Some(runtime) = current_thread_runtime() else {
        return ExitCode::FAILURE;
    };
    let source = match castellan_authenticators::Source::build(chosen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match &source {
        castellan_authenticators::Source::Ldap(ldap) => {
            let answer = runtime.block_on(ldap.test(&credentials));
            if let Some(dn) = &answer.dn {
                println!("dn: {dn}");
            }
            if let Some(notice) = &answer.notice {
                println!("notice: {notice}");
            }
            answer.result
        }
        castellan_authenticators::Source::Sql(sql) => {
            let answer = runtime.block_on(sql.test(&credentials));
            if let Some(format) = &answer.hash_format {
                println!("stored hash: {format}");
            }
            answer.result
        }
    };
    match &result {
        Ok(principal) => {
            println!("result: accepted");
            println!("principal: {}", principal.id);
            for (k, vs) in &principal.attributes {
                for v in vs {
                    println!("attribute {k}: {v}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let said = match e {
                castellan_core::AuthnError::UnknownUser => "unknown user".to_owned(),
                castellan_core::AuthnError::InvalidCredentials => "wrong password".to_owned(),
                castellan_core::AuthnError::Refused(r) => format!("refused: {}", r.problem),
                other => format!("unavailable: {other}"),
            };
            println!("result: {said}");
            ExitCode::FAILURE
        }
    }
}

fn settings_or_defaults(config: Option<&Path>) -> Result<config::Settings, String> {
    match config {
        Some(path) => config::load(path).map_err(|e| e.to_string()),
        None => config::embedded_defaults().map_err(|e| e.to_string()),
    }
}

fn upstreams_test(config: &Path, name: Option<&str>) -> ExitCode {
    let settings = match config::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let chosen: Vec<_> = settings
        .upstreams
        .iter()
        .filter(|u| name.is_none_or(|n| n == u.name))
        .collect();
    if chosen.is_empty() {
        eprintln!("no such upstream in {}", config.display());
        return ExitCode::from(2);
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    let Ok(http) = castellan_delegation::http_client(std::time::Duration::from_secs(10)) else {
        return ExitCode::FAILURE;
    };
    let mut ok = true;
    for u in chosen {
        let outcome = runtime.block_on(castellan_delegation::upstreams::probe(u, &http));
        match outcome {
            Ok(line) => println!("{}: ok: {line}", u.name),
            Err(e) => {
                ok = false;
                println!("{}: FAILED: {e}", u.name);
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn keys(command: KeysCommand) -> ExitCode {
    let outcome = match command {
        KeysCommand::Rotate {
            config,
            publish_old_for,
        } => settings_or_defaults(config.as_deref()).and_then(|settings| {
            let keep = config::parse_duration(&publish_old_for)?;
            let dir = &settings.data_dir;
            let mut keys = castellan_oidc::SigningKeys::load(dir)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!(
                        "no signing keys in {}: start the server once first",
                        dir.display()
                    )
                })?;
            let fresh = keys
                .rotate(castellan_oidc::signing_keys::unix_now(), keep.as_secs())
                .map_err(|e| e.to_string())?;
            keys.save(dir).map_err(|e| e.to_string())?;
            println!("new active keys: {}", fresh.join(" "));
            Ok(())
        }),
        KeysCommand::List { config } => {
            settings_or_defaults(config.as_deref()).and_then(|settings| {
                let keys = castellan_oidc::SigningKeys::load(&settings.data_dir)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no signing keys in {}", settings.data_dir.display()))?;
                let active = keys.active_key_ids();
                for id in keys.key_ids() {
                    let state = if active.contains(&id) {
                        "active"
                    } else {
                        "published"
                    };
                    println!("{id} {state}");
                }
                Ok(())
            })
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path, probe: bool) -> ExitCode {
    match config::load(path) {
        Ok(settings) => {
            for w in &settings.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: OK", path.display());
            if probe && !probe_authenticators(&settings) {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn hash_password() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = input.lines().next().unwrap_or("");
    if password.is_empty() {
        eprintln!("no password on stdin");
        return ExitCode::FAILURE;
    }
    match config::hash(password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc keeps freed large blocks (argon2's ~19 MiB per verification) and
/// grows one arena per thread; both hold memory the server no longer uses.
/// A fixed mmap threshold returns large blocks at once; two arenas bound the
/// rest.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// Hands free heap pages back to the system now and then: tickets are
/// short-lived, and after a burst glibc would keep their pages resident.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn spawn_allocator_trim() {
    tokio::spawn(async {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            every.tick().await;
            // SAFETY: malloc_trim is thread-safe and only releases free memory.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn spawn_allocator_trim() {}

fn serve(config_path: Option<&Path>) -> ExitCode {
    let started = Instant::now();
    tune_allocator();
    let settings = match config_path {
        Some(path) => match config::load(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => match config::embedded_defaults() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
    };
    match castellan_logging::format_from_env(settings.log_format) {
        Ok(format) => castellan_logging::init(format),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings, config_path.map(Path::to_path_buf), started)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    settings: config::Settings,
    config_path: Option<PathBuf>,
    started: Instant,
) -> anyhow::Result<()> {
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data_dir {}", settings.data_dir.display()))?;
    let listen = settings.listen;
    let public_url = settings.public_url.clone();
    let services = settings.services.len();
    let oidc_clients = settings.oidc.clients.len();
    let limits = settings.connections;
    let open_files = server::raise_open_file_limit().unwrap_or_else(|e| {
        tracing::warn!("{e}");
        0
    });
    let ceiling = if open_files == 0 {
        limits.max_connections
    } else {
        server::connection_ceiling(limits.max_connections, open_files)
    };
    if ceiling < limits.max_connections {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_files,
            "the open-file limit allows {ceiling} client connections only; raise it \
             (LimitNOFILE= in the systemd unit)"
        );
    }
    let socket = admin::AdminSocket::of(&settings.data_dir, listen);
    let live = reload::Live::start(settings, config_path).await?;
    spawn_allocator_trim();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    // After the listen socket: a second server on the same port has
    // failed by now and cannot take this one's admin socket.
    if let Err(e) = admin::spawn(live.clone(), &socket) {
        tracing::warn!(
            socket = %socket,
            "no admin socket ({e}): `castellan reload` and `castellan sessions` cannot reach \
             this server; SIGHUP still reloads"
        );
    }
    spawn_reload_on_hangup(live.clone());
    tracing::info!(
        %listen,
        %public_url,
        services,
        oidc_clients,
        max_connections = ceiling,
        startup_ms = started.elapsed().as_millis() as u64,
        "Castellan is serving"
    );
    server::serve(listener, live.router(), limits, ceiling, shutdown_signal()).await;
    if let Some(audit) = live.audit() {
        // The last lines reach the file before the process ends.
        let audit = audit.clone();
        let _ = tokio::task::spawn_blocking(move || audit.flush(std::time::Duration::from_secs(5)))
            .await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP re-reads the configuration (as `castellan reload` does).
fn spawn_reload_on_hangup(live: std::sync::Arc<reload::Live>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    // logrotate renamed the audit log: a new file from here.
                    if let Some(audit) = live.audit() {
                        audit.reopen();
                    }
                    live.reload().await;
                }
            });
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP ({e}): reload through the admin socket only")
        }
    }
}

/// SIGTERM or SIGINT: stop accepting, let in-flight requests finish.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
