//! Configuration generations. SIGHUP and `castellan reload` re-read the
//! file with `check-config`'s code, build a new state over the lasting parts
//! (ticket store, factor store, keys, counters) and swap it in at once: a
//! request holds the router, and so the state, it started with; the next
//! one gets the new generation. A file that does not validate changes
//! nothing.

use crate::app;
use crate::config::{self, Settings};
use crate::middleware::App;
use crate::state::{self, AppState, Lasting};
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::Arc;

/// What a reload did, line by line, for the log and `castellan reload`.
pub struct Reloaded {
    pub ok: bool,
    pub lines: Vec<String>,
}

/// The running configuration and where it came from.
pub struct Live {
    config: Option<PathBuf>,
    lasting: Lasting,
    state: ArcSwap<AppState>,
    router: Arc<ArcSwap<App>>,
    https: bool,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Live {
    pub async fn start(settings: Settings, config: Option<PathBuf>) -> anyhow::Result<Arc<Self>> {
        let lasting = Lasting::open(&settings).await?;
        let https = settings.secure_cookies();
        let state = state::build(settings, &lasting, None).await?;
        let router = Arc::new(ArcSwap::from_pointee(routes(state.clone(), https)));
        Ok(Arc::new(Self {
            config,
            lasting,
            state: ArcSwap::new(state),
            router,
            https,
            reloading: tokio::sync::Mutex::new(()),
        }))
    }

    /// What the server loop serves each request with.
    pub fn router(&self) -> Arc<ArcSwap<App>> {
        self.router.clone()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.load_full()
    }

    pub fn audit(&self) -> Option<&Arc<castellan_audit::AuditLog>> {
        self.lasting.audit()
    }

    /// Re-reads the configuration file and swaps the new generation in,
    /// or changes nothing and says why.
    pub async fn reload(&self) -> Reloaded {
        let _one = self.reloading.lock().await;
        let outcome = self.try_reload().await;
        self.lasting.reloads().attempted(outcome.is_ok());
        let generation = self.lasting.reloads().generation();
        if let Some(audit) = self.audit() {
            use castellan_core::audit::{AuditEvent, AuditKind, AuditSink as _, Outcome};
            let outcome = if outcome.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Refused
            };
            audit.record(
                AuditEvent::new(AuditKind::Reload, outcome)
                    .detail(format!("generation {generation}")),
            );
        }
        match outcome {
            Ok(mut lines) => {
                for line in &lines {
                    tracing::warn!("{line}");
                }
                tracing::info!(generation, "configuration reloaded");
                lines.push(format!("configuration reloaded: generation {generation}"));
                Reloaded { ok: true, lines }
            }
            Err(lines) => {
                for line in &lines {
                    tracing::error!("{line}");
                }
                tracing::error!(
                    generation,
                    "configuration reload refused: the running configuration stays"
                );
                let mut lines = lines;
                lines.push(format!(
                    "reload refused: generation {generation} stays in force"
                ));
                Reloaded { ok: false, lines }
            }
        }
    }

    async fn try_reload(&self) -> Result<Vec<String>, Vec<String>> {
        let Some(path) = self.config.clone() else {
            return Err(vec![
                "started on the embedded defaults: there is no configuration file to re-read"
                    .into(),
            ]);
        };
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| vec![format!("reading the configuration: {e}")])?;
        let mut settings =
            loaded.map_err(|e| e.to_string().lines().map(str::to_owned).collect::<Vec<_>>())?;
        let previous = self.state();
        let mut lines: Vec<String> = settings
            .warnings
            .iter()
            .map(|w| format!("warning: {w}"))
            .collect();
        for changed in keep_restart_only(&mut settings, &previous.settings) {
            lines.push(format!(
                "{changed} changed: this needs a restart; the running value stays until then"
            ));
        }
        let state = state::build(settings, &self.lasting, Some(&previous))
            .await
            .map_err(|e| vec![format!("{e:#}")])?;
        // The router first: a request that read the old router finishes
        // on the old state it holds.
        self.router
            .store(Arc::new(routes(state.clone(), self.https)));
        self.state.store(state);
        Ok(lines)
    }
}

fn routes(state: Arc<AppState>, https: bool) -> App {
    app::router(state, https)
}

/// Settings a running process cannot change (its socket, its stores, its
/// URL, which every issued token names): a new value is reported and the
/// running one kept. Returns the names of those that differed.
fn keep_restart_only(new: &mut Settings, running: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if new.listen != running.listen {
        changed.push("server.listen");
        new.listen = running.listen;
    }
    if new.public_url != running.public_url {
        changed.push("server.public_url");
        new.public_url = running.public_url.clone();
        new.prefix = running.prefix.clone();
    }
    if new.data_dir != running.data_dir {
        changed.push("server.data_dir");
        new.data_dir = running.data_dir.clone();
    }
    if new.connections != running.connections {
        changed.push("the [server] connection limits");
        new.connections = running.connections;
    }
    if new.log_format != running.log_format {
        changed.push("server.log_format");
        new.log_format = running.log_format;
    }
    if new.store != running.store {
        changed.push("the ticket store ([tickets] store, redis_url)");
        new.store = running.store.clone();
    }
    if new.audit != running.audit {
        changed.push("[audit] path");
        new.audit = running.audit.clone();
    }
    if new.mfa != running.mfa {
        changed.push("the [mfa] section (store, key, issuer)");
        new.mfa = running.mfa.clone();
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(text: &str) -> Settings {
        config::parse(text, Path::new("/etc/castellan"), false).expect("valid")
    }

    #[test]
    fn restart_only_settings_keep_their_running_values_and_are_named() {
        let running = settings(
            "[server]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://sso.example.org/cas\"\n",
        );
        let mut new = settings(
            "[server]\nlisten = \"127.0.0.1:9090\"\npublic_url = \"https://idp.example.org/sso\"\n\
             data_dir = \"other\"\n[tickets]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1/0\"\n\
             sso_session_ttl = \"1h\"\n[audit]\npath = \"audit.jsonl\"\n",
        );
        let changed = keep_restart_only(&mut new, &running);
        assert_eq!(
            changed,
            [
                "server.listen",
                "server.public_url",
                "server.data_dir",
                "the ticket store ([tickets] store, redis_url)",
                "[audit] path"
            ]
        );
        assert_eq!(new.listen, running.listen);
        assert_eq!(new.public_url, running.public_url);
        assert_eq!(new.prefix, "/cas");
        assert_eq!(new.data_dir, running.data_dir);
        assert_eq!(new.store, running.store);
        assert_eq!(new.audit, running.audit);
        // What a reload is for changes.
        assert_eq!(
            new.tickets.session_ttl,
            std::time::Duration::from_secs(3600)
        );
        let mut same = settings(
            "[server]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://sso.example.org/cas\"\n",
        );
        assert!(keep_restart_only(&mut same, &running).is_empty());
    }
}
