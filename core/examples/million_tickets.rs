//! Holds 1M live tickets in the memory store, lets half of them expire, and
//! reports the memory used and the longest pause of the background sweeper
//! (one shard at a time: no stop-the-world scan).
//!
//! `cargo run --release -p castellan-core --example million_tickets`

use castellan_core::{LoginFlow, ManualClock, MemoryStore, Ticket, TicketStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const COUNT: usize = 1_000_000;
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = MemoryStore::new(clock.clone());
    let before = rss_kib();
    let started = Instant::now();
    for i in 0..COUNT {
        let id = castellan_core::ids::new_ticket_id("LF");
        let service = Some(format!("https://app{}.example.org/", i % 100));
        // Half live 10 s, half 10 minutes.
        let ttl = Duration::from_secs(if i % 2 == 0 { 10 } else { 600 });
        store
            .add_ticket(Ticket::LoginFlow(LoginFlow { id, service }), ttl)
            .await?;
    }
    let inserted = started.elapsed();
    let full = rss_kib();
    println!(
        "inserted {COUNT} tickets in {inserted:?}; RSS +{} MiB ({} B per ticket)",
        (full - before) / 1024,
        (full - before) * 1024 / COUNT as u64
    );
    clock.advance(Duration::from_secs(11));
    let mut longest = Duration::ZERO;
    let mut dropped = 0;
    for shard in 0..64 {
        let t = Instant::now();
        dropped += store.sweep_shard(shard);
        longest = longest.max(t.elapsed());
    }
    println!(
        "swept {dropped} expired tickets; longest single-shard pause {longest:?}; {} left",
        store.len()
    );
    Ok(())
}
