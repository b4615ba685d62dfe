//! Start time: spawn the server, poll `/health` tightly over plain blocking
//! sockets, stop the server; repeat and report the median.

use anyhow::{bail, Context as _, Result};
use clap::Args;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct StartupArgs {
    /// The castellan binary.
    #[arg(long)]
    bin: PathBuf,
    /// Its configuration file (`serve --config`).
    #[arg(long)]
    config: PathBuf,
    /// Base URL the configuration listens on, e.g. http://127.0.0.1:8443/cas
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Microseconds between two polls.
    #[arg(long, default_value_t = 200)]
    poll_us: u64,
    /// Give up on one start after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

fn health_ok(addr: SocketAddr, request: &[u8]) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(request).is_err() {
        return false;
    }
    let mut buf = [0u8; 32];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(k) => got += k,
        }
    }
    buf.starts_with(b"HTTP/1.1 200")
}

pub fn run(args: &StartupArgs) -> Result<()> {
    let rest = args
        .url
        .strip_prefix("http://")
        .context("--url must be http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = authority
        .to_socket_addrs()?
        .next()
        .context("--url resolves to nothing")?;
    let request = format!(
        "GET {}/health HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n",
        path.trim_end_matches('/')
    );
    if health_ok(addr, request.as_bytes()) {
        bail!("something already answers on {addr}: stop it first");
    }
    let mut times = Vec::with_capacity(args.runs);
    for run in 0..args.runs {
        let t0 = Instant::now();
        let mut child = Command::new(&args.bin)
            .arg("serve")
            .arg("--config")
            .arg(&args.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", args.bin.display()))?;
        let deadline = t0 + Duration::from_secs_f64(args.timeout);
        let ready = loop {
            if health_ok(addr, request.as_bytes()) {
                break Some(t0.elapsed());
            }
            if Instant::now() > deadline {
                break None;
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("the server exited during start ({status}); run it by hand to see why");
            }
            std::thread::sleep(Duration::from_micros(args.poll_us));
        };
        let _ = child.kill();
        let _ = child.wait();
        // Wait for the port to be free again before the next start.
        let free_by = Instant::now() + Duration::from_secs(5);
        while health_ok(addr, request.as_bytes()) && Instant::now() < free_by {
            std::thread::sleep(Duration::from_millis(5));
        }
        match ready {
            Some(d) => {
                eprintln!("start {}: {:.1} ms", run + 1, d.as_secs_f64() * 1000.0);
                times.push(d);
            }
            None => bail!("no 200 from /health within {} s", args.timeout),
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(times[times.len() / 2]);
    eprintln!(
        "startup: median {median:.1} ms (min {:.1}, max {:.1}) over {} starts",
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len()
    );
    println!(
        "RESULT kind=startup runs={} median_ms={median:.1} min_ms={:.1} max_ms={:.1}",
        times.len(),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
    Ok(())
}
