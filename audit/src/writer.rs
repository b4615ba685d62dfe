//! The audit log itself: a bounded queue of formatted lines, one writer
//! thread, a file opened for appending (mode 0600) or stderr.

use crate::context;
use crate::line::format_line;
use castellan_core::audit::{AuditEvent, AuditSink, Task};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Lines waiting for the writer at most; past it, new lines are dropped.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// A warning about dropped lines at most this often.
const WARN_EVERY_MS: u64 = 60_000;

#[derive(Debug, Error)]
pub enum AuditError {
    #[error("cannot open the audit log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the audit log writer: {0}")]
    Writer(std::io::Error),
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    Stderr,
}

impl Target {
    /// `[audit] path`: `"-"` is stderr; a relative path is relative to
    /// `base` (the configuration file's directory).
    pub fn from_config(path: &str, base: &Path) -> Self {
        if path == "-" {
            Self::Stderr
        } else {
            Self::File(base.join(path))
        }
    }
}

enum Message {
    Line(String),
    /// Nothing to write: look at the reopen flag now.
    Wake,
    /// Answer once every line queued before is written and flushed.
    Flush(mpsc::Sender<()>),
    /// Tests: the writer waits until told to go on (a slow disk).
    #[cfg(test)]
    Hold(Receiver<()>),
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    /// When the last warning about drops was logged (ms since the epoch).
    warned_at: AtomicU64,
    reopen: AtomicBool,
}

/// The audit log: an [`AuditSink`] whose `record` never blocks.
pub struct AuditLog {
    queue: SyncSender<Message>,
    counters: Arc<Counters>,
}

impl AuditLog {
    /// Opens the target now (so that a wrong path fails at start) and
    /// starts the writer.
    pub fn open(target: Target) -> Result<Self, AuditError> {
        Self::with_capacity(target, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(target: Target, capacity: usize) -> Result<Self, AuditError> {
        let output = Output::open(target)?;
        let (queue, lines) = mpsc::sync_channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let for_writer = counters.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_lines(lines, output, &for_writer))
            .map_err(AuditError::Writer)?;
        Ok(Self { queue, counters })
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Closes the file and opens the path again (after logrotate renamed
    /// it): the next lines go to a new file. Never blocks.
    pub fn reopen(&self) {
        self.counters.reopen.store(true, Ordering::Release);
        // A full queue means a busy writer, which looks at the flag soon.
        let _ = self.queue.try_send(Message::Wake);
    }

    /// Waits (at most `timeout`) until every line recorded before is
    /// written and flushed: at shutdown, and in tests. Blocks the thread.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = mpsc::channel();
        if self.queue.send(Message::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(timeout).is_ok()
    }

    fn enqueue(&self, line: String) {
        match self.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                self.warn_dropped(dropped);
            }
        }
    }

    fn warn_dropped(&self, dropped: u64) {
        let now = now_ms();
        let last = self.counters.warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY_MS;
        if due
            && self
                .counters
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = dropped,
                "audit log queue full: events dropped (see castellan_audit_events_dropped_total)"
            );
        }
    }
}

impl AuditSink for AuditLog {
    fn record(&self, event: AuditEvent) {
        let context = context::current();
        let line = format_line(&event, time::OffsetDateTime::now_utc(), context.as_deref());
        self.enqueue(line);
    }

    fn bind(&self, task: Task) -> Task {
        match context::current() {
            Some(context) => Box::pin(context::rescope(context, task)),
            None => task,
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum Output {
    File { path: PathBuf, out: BufWriter<File> },
    Stderr(BufWriter<std::io::Stderr>),
}

fn open_file(path: &Path) -> Result<File, AuditError> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Who signed in where, from which address: for the operator only.
        options.mode(0o600);
    }
    options.open(path).map_err(|source| AuditError::Open {
        path: path.to_owned(),
        source,
    })
}

impl Output {
    fn open(target: Target) -> Result<Self, AuditError> {
        Ok(match target {
            Target::Stderr => Self::Stderr(BufWriter::new(std::io::stderr())),
            Target::File(path) => {
                let out = BufWriter::new(open_file(&path)?);
                Self::File { path, out }
            }
        })
    }

    fn reopen(&mut self) {
        if let Self::File { path, out } = self {
            let _ = out.flush();
            match open_file(path) {
                Ok(file) => {
                    *out = BufWriter::new(file);
                    tracing::info!(path = %path.display(), "audit log reopened");
                }
                Err(e) => tracing::error!("{e}; writing on to the old file"),
            }
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Self::File { out, .. } => out,
            Self::Stderr(out) => out,
        }
    }
}

/// The writer thread: drains the queue, flushes whenever it is empty.
fn write_lines(lines: Receiver<Message>, mut output: Output, counters: &Counters) {
    let mut failing = false;
    let mut handle = |message: Message, output: &mut Output| {
        if counters.reopen.swap(false, Ordering::AcqRel) {
            output.reopen();
        }
        match message {
            Message::Line(line) => match output.writer().write_all(line.as_bytes()) {
                Ok(()) => {
                    counters.written.fetch_add(1, Ordering::Relaxed);
                    failing = false;
                }
                Err(e) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        tracing::error!(error = %e, "audit log: cannot write");
                        failing = true;
                    }
                }
            },
            Message::Wake => {}
            Message::Flush(done) => {
                let _ = output.writer().flush();
                let _ = done.send(());
            }
            #[cfg(test)]
            Message::Hold(until) => {
                let _ = until.recv();
            }
        }
    };
    while let Ok(first) = lines.recv() {
        handle(first, &mut output);
        loop {
            while let Ok(next) = lines.try_recv() {
                handle(next, &mut output);
            }
            let _ = output.writer().flush();
            // Under load lines come all the time: a short pause lets them
            // gather, so that one write(2) and no wake-up of this thread
            // serve many. Woken and flushed per line, the log cost the
            // request path more than making the line. An idle log is still
            // written at once (flushed above).
            std::thread::sleep(BATCH_PAUSE);
            match lines.try_recv() {
                Ok(next) => handle(next, &mut output),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    let _ = output.writer().flush();
                    return;
                }
            }
        }
    }
    let _ = output.writer().flush();
}

/// How long the writer lets lines gather once it has written some.
const BATCH_PAUSE: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::RequestContext;
    use castellan_core::audit::{AuditKind, Outcome};
    use std::sync::atomic::AtomicUsize;

    const WAIT: Duration = Duration::from_secs(5);

    /// A fresh directory under the system's temporary one.
    fn temp_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "castellan-audit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn event(user: &str) -> AuditEvent {
        AuditEvent::new(AuditKind::Login, Outcome::Ok).user(user)
    }

    fn users_in(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["user"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    }

    #[test]
    fn lines_are_appended_to_a_file_only_its_owner_reads() {
        let dir = temp_dir();
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, "").unwrap();
        std::fs::remove_file(&path).unwrap();
        let log = AuditLog::open(Target::from_config("audit.jsonl", &dir)).unwrap();
        log.record(event("alice"));
        log.record(event("bob"));
        assert!(log.flush(WAIT));
        assert_eq!(users_in(&path), ["alice", "bob"]);
        assert_eq!(log.written(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second log on the same file appends.
        drop(log);
        let again = AuditLog::open(Target::File(path.clone())).unwrap();
        again.record(event("carol"));
        assert!(again.flush(WAIT));
        assert_eq!(users_in(&path), ["alice", "bob", "carol"]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let dir = temp_dir();
        let path = dir.join("audit.jsonl");
        let log = AuditLog::with_capacity(Target::File(path.clone()), 100).unwrap();
        // The writer is stuck (a slow disk) until `go` is dropped.
        let (go, hold) = mpsc::channel::<()>();
        log.queue.send(Message::Hold(hold)).unwrap();
        let started = std::time::Instant::now();
        for i in 0..1_000 {
            log.record(event(&format!("u{i}")));
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "record never waits for the writer"
        );
        // The hold may or may not have left the queue when the lines came.
        assert!((900..=901).contains(&log.dropped()), "{}", log.dropped());
        drop(go);
        assert!(log.flush(WAIT));
        assert_eq!(log.written() + log.dropped(), 1_000);
        assert_eq!(users_in(&path).len() as u64, log.written());
    }

    #[test]
    fn reopen_after_a_rename_writes_to_a_new_file() {
        let dir = temp_dir();
        let path = dir.join("audit.jsonl");
        let rotated = dir.join("audit.jsonl.1");
        let log = AuditLog::open(Target::File(path.clone())).unwrap();
        log.record(event("before"));
        assert!(log.flush(WAIT));
        std::fs::rename(&path, &rotated).unwrap();
        log.record(event("still-old"));
        assert!(log.flush(WAIT));
        log.reopen();
        log.record(event("after"));
        assert!(log.flush(WAIT));
        assert_eq!(users_in(&rotated), ["before", "still-old"]);
        assert_eq!(users_in(&path), ["after"]);
    }

    #[test]
    fn a_path_that_cannot_be_opened_fails_at_start() {
        let dir = temp_dir();
        let err = AuditLog::open(Target::File(dir.join("missing/dir/audit.jsonl"))).unwrap_err();
        assert!(err.to_string().contains("missing/dir/audit.jsonl"), "{err}");
        assert_eq!(Target::from_config("-", &dir), Target::Stderr);
    }

    #[tokio::test]
    async fn a_line_carries_its_request_s_context_also_from_a_bound_task() {
        let dir = temp_dir();
        let path = dir.join("audit.jsonl");
        let log = Arc::new(AuditLog::open(Target::File(path.clone())).unwrap());
        let ctx = RequestContext {
            request_id: Some("abc-1".into()),
            client: Some("192.0.2.9".parse().unwrap()),
        };
        let in_request = log.clone();
        crate::scope(Some(ctx), async move {
            in_request.record(event("direct"));
            let spawned = in_request.clone();
            let task = in_request.bind(Box::pin(async move {
                spawned.record(event("spawned"));
            }));
            tokio::spawn(task).await.unwrap();
        })
        .await;
        log.record(event("outside"));
        assert!(log.flush(WAIT));
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        for l in &lines[..2] {
            assert_eq!(l["request_id"], "abc-1");
            assert_eq!(l["client"], "192.0.2.9");
        }
        assert!(lines[2]["request_id"].is_null());
    }
}
