//! The HTTP/1.1 server loop. A client holds a connection (a task, a file
//! descriptor) only while it is doing something: it has `header_read_timeout`
//! to send a request head — from connecting, or from the first byte of a
//! later request — and `idle_timeout` to start its next request on a
//! kept-alive connection. At most `max_connections` are open; beyond that
//! new connections wait in the listen queue. SIGTERM stops accepting and
//! lets the requests in flight finish.

use crate::config::ConnectionLimits;
use crate::middleware::App;
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::Service as _;

/// A request head (request line and headers) larger than this is answered
/// 431 and the connection closed. Browsers send a few KB; SAML redirect
/// requests and cookies of a shared domain fit with room to spare.
pub const MAX_REQUEST_HEAD_BYTES: usize = 32 * 1024;
/// Header fields per request at most (431 beyond).
pub const MAX_HEADERS: usize = 64;
/// The read buffer of a connection: a bound on memory per client.
const MAX_BUFFER_BYTES: usize = 64 * 1024;
/// File descriptors kept for what is not a client connection: the data
/// directory, Redis, back-channel logout and upstream calls.
const RESERVED_FILES: u64 = 128;

/// Raises the soft open-file limit to the hard one, as most servers do: the
/// soft default (often 1024) is far below what idle clients can open.
/// Returns the soft limit in force afterwards.
#[cfg(unix)]
// rlim_t is u64 on 64-bit targets only.
#[allow(clippy::unnecessary_cast)]
pub fn raise_open_file_limit() -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "reading the open-file limit: {}",
            io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(limit.rlim_cur as u64);
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    if set_open_file_limit(&raised) != 0 {
        return Err(format!(
            "raising the open-file limit from {} to {}: {}",
            limit.rlim_cur,
            limit.rlim_max,
            io::Error::last_os_error()
        ));
    }
    Ok(raised.rlim_cur as u64)
}

/// prlimit64 rather than setrlimit: systemd's `@default` syscall set allows
/// it, while `SystemCallFilter=~@resources` kills a process calling setrlimit.
#[cfg(target_os = "linux")]
fn set_open_file_limit(limit: &libc::rlimit) -> i32 {
    // SAFETY: prlimit on our own pid (0) reads the struct passed, writes nothing.
    unsafe { libc::prlimit(0, libc::RLIMIT_NOFILE, limit, std::ptr::null_mut()) }
}

#[cfg(all(unix, not(target_os = "linux")))]
fn set_open_file_limit(limit: &libc::rlimit) -> i32 {
    // SAFETY: setrlimit reads the struct passed.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) }
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Result<u64, String> {
    Ok(u64::MAX)
}

/// The connection ceiling: `max_connections`, unless the open-file limit
/// allows fewer (then accept would fail with EMFILE instead of waiting).
pub fn connection_ceiling(max_connections: usize, open_files: u64) -> usize {
    let usable = open_files
        .saturating_sub(RESERVED_FILES)
        .max(open_files / 2)
        .max(1);
    max_connections.min(usize::try_from(usable).unwrap_or(usize::MAX))
}

/// Serves the router in force (a reload swaps it) on `listener` until
/// `shutdown` resolves, then waits for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    routers: Arc<ArcSwap<App>>,
    limits: ConnectionLimits,
    ceiling: usize,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        // Replaced by the per-connection deadlines below: hyper's own timer
        // also runs while a kept-alive connection waits, which would cut
        // the idle time down to the header time.
        .header_read_timeout(None)
        .max_buf_size(MAX_BUFFER_BYTES)
        .max_header_size(MAX_REQUEST_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(ceiling));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if last_full_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(
                        ceiling,
                        "connection ceiling reached: new connections wait until one closes"
                    );
                    last_full_warning = Some(Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = Connection {
            activity: Arc::new(Activity::new()),
            limits,
        };
        let service = {
            let activity = connection.activity.clone();
            let routers = routers.clone();
            hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                let busy = activity.request_started();
                // Each request is served whole by the generation it started in.
                // Called at once (the frame and the router are always
                // ready): the future hyper keeps holds the request's
                // future only, not also the application and the request.
                let served = App::clone(&routers.load()).call(request.map(Body::new));
                async move {
                    let response = served.await;
                    drop(busy);
                    response
                }
            })
        };
        let io = TokioIo::new(WatchedStream {
            inner: stream,
            activity: connection.activity.clone(),
        });
        let served = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            tokio::select! {
                outcome = served => {
                    if let Err(e) = outcome {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                }
                () = connection.expired() => {
                    tracing::debug!(%peer, "connection closed: no request in time");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn accept_failed(e: io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused => {}
        // EMFILE/ENFILE and the like: the ceiling should prevent them; give
        // the system a moment rather than spinning.
        _ => {
            tracing::error!("accepting a connection failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Where a connection stands, for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connected, the first request head not yet complete.
    Opened(Instant),
    /// Requests being handled (their own time limit is the middleware's).
    Busy(usize),
    /// Kept alive after a response, nothing of the next request yet.
    Idle(Instant),
    /// The first bytes of a later request arrived at this instant.
    ReadingHead(Instant),
}

/// A connection's phase, read by its watcher when the watcher's timer
/// fires. No change of phase wakes the watcher: that cost a task switch and
/// two timer updates on every request.
struct Activity {
    phase: Mutex<Phase>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            phase: Mutex::new(Phase::Opened(Instant::now())),
        }
    }

    fn set(&self, update: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock();
        *phase = update(*phase);
    }

    fn request_started(self: &Arc<Self>) -> BusyGuard {
        self.set(|phase| match phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
        BusyGuard(self.clone())
    }

    fn bytes_read(&self) {
        self.set(|phase| match phase {
            Phase::Idle(_) => Phase::ReadingHead(Instant::now()),
            other => other,
        });
    }

    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        match *self.phase.lock() {
            Phase::Opened(at) | Phase::ReadingHead(at) => Some(at + limits.header_read_timeout),
            Phase::Idle(at) => Some(at + limits.idle_timeout),
            Phase::Busy(_) => None,
        }
    }
}

/// Held while a request is handled; its drop may leave the connection idle.
struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(|phase| match phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

struct Connection {
    activity: Arc<Activity>,
    limits: ConnectionLimits,
}

impl Connection {
    /// Resolves when the connection has had no request in flight for longer
    /// than its phase allows.
    async fn expired(&self) {
        // A change of phase sets a deadline at least this far from the
        // change: waking this often (and at each deadline) never misses one.
        let recheck = self
            .limits
            .header_read_timeout
            .min(self.limits.idle_timeout)
            .max(Duration::from_millis(100));
        loop {
            let now = Instant::now();
            match self.activity.deadline(&self.limits) {
                Some(deadline) if deadline <= now => return,
                Some(deadline) => tokio::time::sleep_until(deadline.min(now + recheck)).await,
                None => tokio::time::sleep_until(now + recheck).await,
            }
        }
    }
}

/// The client's TCP stream, telling its connection's [`Activity`] when bytes
/// arrive.
struct WatchedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
        }
    }

    #[test]
    fn the_ceiling_leaves_room_for_other_files() {
        assert_eq!(connection_ceiling(4096, 65536), 4096);
        assert_eq!(connection_ceiling(4096, 1024), 896);
        assert_eq!(connection_ceiling(4096, 100), 50);
        assert_eq!(connection_ceiling(4096, 0), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_deadline() {
        let activity = Arc::new(Activity::new());
        let opened = Instant::now();
        let l = limits();
        assert_eq!(activity.deadline(&l), Some(opened + l.header_read_timeout));
        let busy = activity.request_started();
        let second = activity.request_started();
        assert_eq!(activity.deadline(&l), None);
        drop(busy);
        assert_eq!(activity.deadline(&l), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(second);
        let idle = Instant::now();
        assert_eq!(activity.deadline(&l), Some(idle + l.idle_timeout));
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_read();
        let head = Instant::now();
        assert_eq!(activity.deadline(&l), Some(head + l.header_read_timeout));
        // Later bytes of the same head do not extend it.
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.bytes_read();
        assert_eq!(activity.deadline(&l), Some(head + l.header_read_timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_and_a_busy_one_does_not() {
        let connection = Connection {
            activity: Arc::new(Activity::new()),
            limits: limits(),
        };
        let busy = connection.activity.request_started();
        let waited = tokio::time::timeout(Duration::from_secs(600), connection.expired()).await;
        assert!(
            waited.is_err(),
            "a connection with a request in flight expired"
        );
        drop(busy);
        let started = Instant::now();
        connection.expired().await;
        assert_eq!(started.elapsed(), limits().idle_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_begun_after_idling_keeps_its_own_deadline() {
        // Nothing wakes the watcher when bytes arrive: it must still close
        // a slow head at its (earlier) header deadline, not at the idle one.
        let connection = Arc::new(Connection {
            activity: Arc::new(Activity::new()),
            limits: limits(),
        });
        drop(connection.activity.request_started());
        let watcher = tokio::spawn({
            let connection = connection.clone();
            async move {
                connection.expired().await;
                Instant::now()
            }
        });
        tokio::time::advance(Duration::from_secs(3)).await;
        connection.activity.bytes_read();
        let head = Instant::now();
        let expired_at = watcher.await.unwrap();
        assert_eq!(expired_at, head + limits().header_read_timeout);
    }
}
