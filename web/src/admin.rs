//! The admin socket: `castellan reload` and `castellan sessions` reach the
//! running server through a Unix socket that only the server's own user
//! (or root) may use: the server checks each peer's uid. On Linux the
//! socket is abstract — no file in data_dir for a copy or a backup to trip
//! on, none left behind by a crash — and named after data_dir and the
//! port, so the CLI finds it from the same configuration. One command per
//! connection, one line; the answer is lines of text, the last one `OK` or
//! `FAILED`.

use crate::reload::Live;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::Path;
#[cfg(not(target_os = "linux"))]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

/// A command line longer than this is refused.
const MAX_COMMAND_BYTES: u64 = 4096;
/// Ending sessions waits for their back-channel deliveries.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// One socket per node: nodes sharing a data_dir listen on different ports.
#[derive(Debug, Clone)]
pub struct AdminSocket {
    name: String,
    #[cfg(not(target_os = "linux"))]
    path: PathBuf,
}

impl AdminSocket {
    pub fn of(data_dir: &Path, listen: SocketAddr) -> Self {
        // The same directory however the configuration spells it.
        let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        // FNV-1a: stable across builds, unlike the std hasher.
        let hash = dir
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
        Self {
            name: format!("castellan/{hash:016x}/{}", listen.port()),
            #[cfg(not(target_os = "linux"))]
            path: data_dir.join(format!("castellan-{}.sock", listen.port())),
        }
    }

    fn address(&self) -> std::io::Result<std::os::unix::net::SocketAddr> {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(self.name.as_bytes())
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = std::fs::remove_file(&self.path);
            std::os::unix::net::SocketAddr::from_pathname(&self.path)
        }
    }
}

impl std::fmt::Display for AdminSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "@{}", self.name)
    }
}

/// Listens on the node's admin socket and serves commands until the
/// process ends.
pub fn spawn(live: Arc<Live>, socket: &AdminSocket) -> std::io::Result<()> {
    let listener = std::os::unix::net::UnixListener::bind_addr(&socket.address()?)?;
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(live.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    Ok(())
}

async fn answer(live: Arc<Live>, stream: UnixStream) {
    // The file mode already keeps others out; the peer's uid says so twice.
    let allowed = stream.peer_cred().is_ok_and(|c| {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        c.uid() == me || c.uid() == 0
    });
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::BufReader::new(read.take(MAX_COMMAND_BYTES)).read_line(&mut line),
    )
    .await;
    let (ok, lines) = if !allowed {
        (false, vec!["not allowed: another user".to_owned()])
    } else if !matches!(read, Ok(Ok(_))) || !line.ends_with('\n') {
        (
            false,
            vec!["no command (one line, at most 4 KiB)".to_owned()],
        )
    } else {
        run(&live, line.trim_end()).await
    };
    let mut out = lines.join("\n");
    out.push_str(if ok { "\nOK\n" } else { "\nFAILED\n" });
    let _ = write
        .write_all(out.trim_start_matches('\n').as_bytes())
        .await;
    let _ = write.shutdown().await;
}

async fn run(live: &Live, command: &str) -> (bool, Vec<String>) {
    let mut words = command.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("reload"), None, None) => {
            tracing::info!("reload asked on the admin socket");
            let reloaded = live.reload().await;
            (reloaded.ok, reloaded.lines)
        }
        (Some("sessions"), Some("list"), Some(user)) => {
            let state = live.state();
            match state.engine.sessions_of(user).await {
                Ok(sessions) => {
                    let mut lines = vec![format!("{} live session(s) of {user}", sessions.len())];
                    lines.extend(sessions.iter().map(|s| {
                        format!(
                            "{}\tsince {}\tuntil {}\t{}{}",
                            castellan_core::ids::redact(&s.id),
                            rfc3339(s.authenticated_at),
                            rfc3339(s.expires_at),
                            s.methods.amr().join("+"),
                            if s.long_term { "\tremember-me" } else { "" }
                        )
                    }));
                    (true, lines)
                }
                Err(e) => (false, vec![format!("the ticket store failed: {e}")]),
            }
        }
        (Some("sessions"), Some("end"), Some(user)) => {
            let state = live.state();
            match state.engine.end_sessions_of(user).await {
                Ok(n) => {
                    tracing::warn!(user = %user, sessions = n, "sessions ended by the operator");
                    (
                        true,
                        vec![format!(
                            "ended {n} session(s) of {user}; their applications were sent single logout"
                        )],
                    )
                }
                Err(e) => (false, vec![format!("the ticket store failed: {e}")]),
            }
        }
        _ => (
            false,
            vec![format!(
                "unknown command {command:?}: reload | sessions list USER | sessions end USER"
            )],
        ),
    }
}

fn rfc3339(unix_ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp((unix_ms / 1000) as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The client side: sends `command` to the server listening on `socket`,
/// prints what it answers, and says whether it ended in `OK`.
pub fn request(socket: &AdminSocket, command: &str) -> Result<bool, String> {
    let address = socket.address().map_err(|e| e.to_string())?;
    let mut stream = std::os::unix::net::UnixStream::connect_addr(&address).map_err(|e| {
        format!("cannot reach the server at {socket}: {e} (is it running with this configuration?)")
    })?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| format!("sending the command: {e}"))?;
    let mut ok = false;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|e| format!("reading the answer: {e}"))?;
        match line.as_str() {
            "OK" => ok = true,
            "FAILED" => ok = false,
            _ => println!("{line}"),
        }
    }
    Ok(ok)
}
