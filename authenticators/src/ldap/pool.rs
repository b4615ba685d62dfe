//! A bounded pool of directory connections, opened on demand across the
//! `urls` in order (failover), kept open between logins.

use super::config::LdapSettings;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Why no connection could be had: the directory is unreachable or
/// refused the service account.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no directory connection free within {0:?}")]
    Exhausted(std::time::Duration),
    #[error("no directory reachable: {0}")]
    Unreachable(String),
    #[error("the service account's bind was refused: {0}")]
    ServiceBind(String),
}

pub struct Pool {
    settings: Arc<LdapSettings>,
    tls: LdapConnSettings,
    /// Bind as the service account after connecting.
    bind_service: bool,
    idle: Mutex<Vec<Ldap>>,
    permits: Semaphore,
    opened: AtomicU64,
}

/// A connection taken from the pool; dropped without [`Conn::release`],
/// it is closed (after an error its state is unknown).
pub struct Conn<'a> {
    pub ldap: Ldap,
    /// Taken from the idle list (it may have gone stale meanwhile).
    pub reused: bool,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl Conn<'_> {
    pub fn release(self) {
        let mut idle = self.pool.idle.lock();
        idle.push(self.ldap.clone());
    }
}

impl Pool {
    pub fn new(settings: Arc<LdapSettings>, tls: LdapConnSettings, bind_service: bool) -> Self {
        Self {
            permits: Semaphore::new(settings.pool_size),
            settings,
            tls,
            bind_service,
            idle: Mutex::new(Vec::new()),
            opened: AtomicU64::new(0),
        }
    }

    /// Connections opened since start.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub async fn get(&self, fresh: bool) -> Result<Conn<'_>, PoolError> {
        let timeout = self.settings.pool_timeout;
        let permit = tokio::time::timeout(timeout, self.permits.acquire())
            .await
            .map_err(|_| PoolError::Exhausted(timeout))?
            .map_err(|_| PoolError::Exhausted(timeout))?;
        if !fresh {
            loop {
                let Some(mut ldap) = self.idle.lock().pop() else {
                    break;
                };
                // The driver ended (the server closed it): drop it.
                if !ldap.is_closed() {
                    return Ok(Conn {
                        ldap,
                        reused: true,
                        pool: self,
                        _permit: permit,
                    });
                }
            }
        }
        let ldap = self.open().await?;
        Ok(Conn {
            ldap,
            reused: false,
            pool: self,
            _permit: permit,
        })
    }

    /// Empties the idle list (after an error on a reused connection, the
    /// others are likely stale too).
    pub fn clear(&self) {
        self.idle.lock().clear();
    }

    async fn open(&self) -> Result<Ldap, PoolError> {
        let mut failures = Vec::new();
        for url in &self.settings.urls {
            let settings = self
                .tls
                .clone()
                .set_conn_timeout(self.settings.connect_timeout)
                .set_starttls(self.settings.start_tls && url.scheme() == "ldap");
            let (conn, mut ldap) = match LdapConnAsync::from_url_with_settings(settings, url).await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(authenticator = %self.settings.name, url = %url, error = %e, "directory not reachable");
                    failures.push(format!("{url}: {e}"));
                    continue;
                }
            };
            tokio::spawn(async move {
                if let Err(e) = conn.drive().await {
                    tracing::debug!(error = %e, "directory connection ended");
                }
            });
            self.opened.fetch_add(1, Ordering::Relaxed);
            if self.bind_service {
                if let Some((dn, password)) = &self.settings.service_account {
                    let result = ldap
                        .with_timeout(self.settings.operation_timeout)
                        .simple_bind(dn, password)
                        .await;
                    match result {
                        Ok(r) if r.rc == 0 => {}
                        Ok(r) => {
                            let _ = ldap.unbind().await;
                            return Err(PoolError::ServiceBind(format!(
                                "{url}: result {} {}",
                                r.rc, r.text
                            )));
                        }
                        Err(e) => {
                            failures.push(format!("{url}: {e}"));
                            continue;
                        }
                    }
                }
            }
            return Ok(ldap);
        }
        Err(PoolError::Unreachable(failures.join("; ")))
    }
}
