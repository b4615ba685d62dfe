//! The token signing keys at start: loaded from `data_dir`, generated on a
//! first start, and never generated when other nodes sharing the ticket
//! store already use keys (they would sign tokens this node cannot verify).

use crate::keys::{KeyError, Keyring, SigningKeys};
use castellan_core::TicketStore;
use std::path::Path;

/// Seconds since the epoch, from the core's clock.
pub fn unix_now() -> u64 {
    castellan_core::Clock::now(&castellan_core::SystemClock) / 1000
}

#[derive(Debug, thiserror::Error)]
pub enum SigningKeysError {
    /// No keys here, and the shared store cannot say whether other nodes
    /// have some: wait for it rather than generate.
    #[error("no signing keys in data_dir, and the ticket store cannot be asked whether other nodes use some: {0}")]
    StoreUnavailable(String),
    #[error("locking the signing keys of data_dir: {0}")]
    Lock(std::io::Error),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(
        "no signing keys in {dir} while other nodes sharing the ticket store use keys {keys}: \
         refusing to generate different ones. Give this node the same data_dir \
         (see deploy/REDIS.md)"
    )]
    OtherNodesKeys { dir: String, keys: String },
}

pub async fn prepare(
    data_dir: &Path,
    store: &dyn TicketStore,
    shared: bool,
) -> Result<SigningKeys, SigningKeysError> {
    // Nodes starting together on one shared data_dir: the first generates,
    // the others wait for it here and load its keys.
    // A read-only data_dir (keys mounted from a secret) takes no lock file;
    // it cannot be written to either, so nothing can be generated there.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join(".signing-keys.lock"))
        .ok();
    if let Some(lock) = &lock {
        lock.lock().map_err(SigningKeysError::Lock)?;
    }
    let keys = match SigningKeys::load(data_dir)? {
        Some(keys) => keys,
        None => {
            // Whether other nodes use keys must be known before generating.
            let published = store
                .published_key_ids()
                .await
                .map_err(|e| SigningKeysError::StoreUnavailable(e.to_string()))?;
            if !published.is_empty() {
                return Err(SigningKeysError::OtherNodesKeys {
                    dir: data_dir.display().to_string(),
                    keys: published.join(", "),
                });
            }
            let keys = SigningKeys::generate(unix_now())?;
            keys.save(data_dir)?;
            tracing::info!(keys = %keys.key_ids().join(", "), dir = %data_dir.display(), "signing keys generated");
            keys
        }
    };
    if shared {
        let mine = keys.key_ids();
        match store.published_key_ids().await {
            Ok(published) => {
                let foreign: Vec<&String> =
                    published.iter().filter(|k| !mine.contains(k)).collect();
                if !foreign.is_empty() {
                    tracing::warn!(
                        "other nodes published signing keys this node does not hold ({}): tokens \
                         they sign will not verify here until every node shares one data_dir",
                        foreign
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not compare signing keys with other nodes"),
        }
    }
    if let Err(e) = store.publish_key_ids(&keys.key_ids()).await {
        tracing::warn!(error = %e, "could not publish this node's signing key ids");
    }
    drop(lock);
    Ok(keys)
}

/// The keys once known: at start, or later when a store that was down at
/// start can be asked. Until then the OIDC key endpoints answer 503.
#[derive(Clone, Default)]
pub struct KeyCell(std::sync::Arc<parking_lot::RwLock<Option<std::sync::Arc<Keyring>>>>);

impl KeyCell {
    /// The keys, once ready.
    pub fn get(&self) -> Option<std::sync::Arc<Keyring>> {
        self.0.read().clone()
    }

    pub fn set(&self, keys: SigningKeys) -> Result<(), KeyError> {
        let ring = Keyring::new(keys)?;
        *self.0.write() = Some(std::sync::Arc::new(ring));
        Ok(())
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Picks up `castellan keys rotate` without a restart: the key file is
/// checked every few seconds and reloaded when it changed (every node on a
/// shared data_dir follows the same rotation).
fn watch(cell: KeyCell, data_dir: std::path::PathBuf, store: std::sync::Arc<dyn TicketStore>) {
    tokio::spawn(async move {
        let path = data_dir.join(crate::keys::FILE_NAME);
        let mut seen = modified(&path);
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            let now = modified(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match SigningKeys::load(&data_dir) {
                Ok(Some(keys)) => {
                    let ids = keys.key_ids();
                    match cell.set(keys) {
                        Ok(()) => {
                            tracing::info!(keys = %ids.join(", "), "signing keys reloaded");
                            if let Err(e) = store.publish_key_ids(&ids).await {
                                tracing::warn!(error = %e, "could not publish the reloaded key ids");
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "reloaded signing keys unusable; keeping the previous ones")
                        }
                    }
                }
                Ok(None) => {
                    tracing::warn!("the signing key file disappeared; keeping the keys in memory")
                }
                Err(e) => {
                    tracing::error!(error = %e, "signing key file unreadable; keeping the previous keys")
                }
            }
        }
    });
}

/// Prepares the keys; a store that is down delays them (retried in the
/// background) instead of stopping the start, so CAS serves meanwhile.
pub async fn prepare_or_retry(
    data_dir: &Path,
    store: std::sync::Arc<dyn TicketStore>,
    shared: bool,
) -> Result<KeyCell, SigningKeysError> {
    let cell: KeyCell = Default::default();
    match prepare(data_dir, store.as_ref(), shared).await {
        Ok(keys) => {
            cell.set(keys)?;
            watch(cell.clone(), data_dir.to_owned(), store.clone());
        }
        Err(e @ SigningKeysError::StoreUnavailable(_)) => {
            tracing::warn!("{e}; retrying in the background");
            let (dir, retry_cell) = (data_dir.to_owned(), cell.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    match prepare(&dir, store.as_ref(), shared).await {
                        Ok(keys) => match retry_cell.set(keys) {
                            Ok(()) => {
                                tracing::info!("signing keys ready");
                                watch(retry_cell, dir, store);
                                break;
                            }
                            Err(e) => {
                                tracing::error!("signing keys: {e}; OIDC keys stay unavailable");
                                break;
                            }
                        },
                        Err(SigningKeysError::StoreUnavailable(_)) => {}
                        Err(e) => {
                            tracing::error!("signing keys: {e}; OIDC keys stay unavailable");
                            break;
                        }
                    }
                }
            });
        }
        Err(e) => return Err(e),
    }
    Ok(cell)
}
