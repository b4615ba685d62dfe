//! A throwaway PostgreSQL for the tests (as tests/e2e/postgres.py does):
//! Debian's PostgreSQL 15 binaries, `initdb` in a temp dir, the server on a
//! free port of 127.0.0.1 with its socket in that dir, run as the
//! `postgres` system user when the tests run as root (PostgreSQL refuses
//! root). Stopped (fast shutdown) and removed on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin_dir() -> PathBuf {
    std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Why PostgreSQL cannot run here, or None.
pub fn unavailable() -> Option<String> {
    let bin = bin_dir();
    for tool in ["initdb", "postgres", "pg_isready"] {
        if !bin.join(tool).exists() {
            return Some(format!(
                "{} missing (Debian package postgresql)",
                bin.join(tool).display()
            ));
        }
    }
    if is_root() && postgres_user().is_none() {
        return Some("running as root and no system user `postgres` to run PostgreSQL as".into());
    }
    None
}

fn is_root() -> bool {
    // The owner of /proc/self is the effective user.
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc")) == 0
}

fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
    user: Option<(u32, u32)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Postgres {
    pub fn start() -> Postgres {
        let user = if is_root() { postgres_user() } else { None };
        let dir = tempfile::Builder::new()
            .prefix("castellan-mfa-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let mut pg = Postgres {
            dir,
            port: free_port(),
            server: None,
            user,
        };
        let data = pg.data();
        let out = pg
            .command("initdb")
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "-E", "UTF8"])
            .args(["--auth-local=trust", "--auth-host=trust", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(pg.dir.path().join("postgres.log")).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(pg.dir.path().join("postgres.log"), Some(uid), Some(gid))
                .unwrap();
        }
        let port = pg.port.to_string();
        let sockets = pg.dir.path().to_str().unwrap().to_owned();
        let server = pg
            .command("postgres")
            .args(["-D", data.to_str().unwrap(), "-p", &port, "-k", &sockets])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=100"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        pg.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = pg
                .command("pg_isready")
                .args(["-h", &sockets, "-p", &port, "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            if let Some(status) = pg.server.as_mut().and_then(|s| s.try_wait().ok().flatten()) {
                panic!("postgres exited {status}:\n{}", pg.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start:\n{}",
                pg.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(bin_dir().join(tool));
        c.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8");
        if let Some((uid, gid)) = self.user {
            c.uid(uid).gid(gid);
        }
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// A URL of a new, empty database.
    pub async fn database(&self, name: &str) -> String {
        use sqlx::Executor;
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .expect("connect as postgres");
        pool.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        pool.close().await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // SIGINT: fast shutdown, clients disconnected.
            let _ = Command::new("kill")
                .args(["-INT", &server.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}
