//! The one test suite every [`TicketStore`] implementation runs (memory, Redis).
//!
//! It uses real time with short TTLs, because a shared store (Redis) keeps
//! its own clock. An implementation's test is one line:
//! `conformance::run_all(|| Arc::new(MyStore::new(..))).await`.

use crate::clock::{Clock, SystemClock};
use crate::principal::Principal;
use crate::service::LogoutMode;
use crate::store::{TicketStore, MAX_SERVICE_RECORDS};
use crate::ticket::{LoginFlow, ServiceRecord, ServiceTicket, Ticket, TicketGrantingTicket};
use std::sync::Arc;
use std::time::Duration;

pub async fn run_all<S, F>(make: F)
where
    S: TicketStore,
    F: Fn() -> Arc<S>,
{
    one_time_consumption(make()).await;
    redeeming_reads_the_session(make()).await;
    concurrent_consumption_has_one_winner(make()).await;
    tickets_expire(make()).await;
    session_lifecycle(make()).await;
    session_index_is_consistent_under_concurrency(make()).await;
    session_hard_limit_beats_idle(make()).await;
    session_idle_limit_is_extended_by_use(make()).await;
    large_values_round_trip(make()).await;
    unknown_and_malformed_keys(make()).await;
    failure_counters(make()).await;
    published_key_ids_accumulate(make()).await;
    records(make()).await;
    concurrent_swaps_see_the_original_once(make()).await;
    a_new_session_carries_given_records(make()).await;
    adding_a_record_is_once_until_it_expires(make()).await;
    a_users_sessions_are_listed_while_they_live(make()).await;
}

async fn a_users_sessions_are_listed_while_they_live<S: TicketStore>(store: Arc<S>) {
    let user = unique("user");
    let mut ids = Vec::new();
    for lifetime in [60_000, 60_000, 300] {
        let mut s = session(&new_session_id(), Duration::from_millis(lifetime));
        s.principal = Arc::new(Principal::new(&user));
        store
            .create_session(&s, Duration::from_millis(lifetime))
            .await
            .unwrap();
        store
            .index_session(&user, &s.id, Duration::from_secs(60))
            .await
            .unwrap();
        ids.push(s.id);
    }
    // Another user's session is not theirs.
    let other = session(&new_session_id(), Duration::from_secs(60));
    store
        .create_session(&other, Duration::from_secs(60))
        .await
        .unwrap();
    let listed = |v: Vec<TicketGrantingTicket>| {
        let mut ids: Vec<String> = v.into_iter().map(|s| s.id).collect();
        ids.sort();
        ids
    };
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed(store.sessions_of(&user).await.unwrap()), expected);
    tokio::time::sleep(Duration::from_millis(450)).await;
    store.remove_session(&ids[0]).await.unwrap();
    assert_eq!(
        listed(store.sessions_of(&user).await.unwrap()),
        vec![ids[1].clone()],
        "expired and removed sessions are not listed"
    );
    assert!(store.sessions_of("nobody").await.unwrap().is_empty());
}

async fn adding_a_record_is_once_until_it_expires<S: TicketStore>(store: Arc<S>) {
    let key = format!("test:{}", unique("A"));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                store
                    .add_record(&key, &[i], Duration::from_millis(400))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        stored += usize::from(t.await.unwrap());
    }
    assert_eq!(stored, 1, "exactly one concurrent add stores");
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert!(store
        .add_record(&key, b"again", Duration::from_secs(30))
        .await
        .unwrap());
    assert_eq!(
        store.record(&key).await.unwrap().as_deref(),
        Some(&b"again"[..])
    );
}

async fn a_new_session_carries_given_records<S: TicketStore>(store: Arc<S>) {
    let mut s = session(&new_session_id(), Duration::from_secs(60));
    s.services = (0..MAX_SERVICE_RECORDS + 3)
        .map(|i| ServiceRecord {
            ticket_id: format!("ST-1-carried{i}"),
            service: format!("https://app.example/{i}"),
            logout: LogoutMode::BackChannel,
        })
        .collect();
    store
        .create_session(&s, Duration::from_secs(60))
        .await
        .unwrap();
    let removed = store.remove_session(&s.id).await.unwrap().unwrap();
    assert_eq!(removed.services.len(), MAX_SERVICE_RECORDS);
    assert_eq!(removed.services[0].ticket_id, "ST-1-carried3");
    assert_eq!(
        removed.services.last().unwrap().ticket_id,
        format!("ST-1-carried{}", MAX_SERVICE_RECORDS + 2)
    );
}

async fn records<S: TicketStore>(store: Arc<S>) {
    let key = format!("test:{}", unique("R"));
    assert_eq!(store.record(&key).await.unwrap(), None);
    assert_eq!(store.take_record(&key).await.unwrap(), None);
    // Swapping a missing record stores nothing.
    assert_eq!(store.swap_record(&key, b"x").await.unwrap(), None);
    assert_eq!(store.record(&key).await.unwrap(), None);

    let value: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    store
        .put_record(&key, &value, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        store.record(&key).await.unwrap().as_deref(),
        Some(&value[..])
    );
    assert_eq!(
        store.swap_record(&key, b"used").await.unwrap().as_deref(),
        Some(&value[..])
    );
    assert_eq!(
        store.swap_record(&key, b"used2").await.unwrap().as_deref(),
        Some(&b"used"[..])
    );
    assert_eq!(
        store.take_record(&key).await.unwrap().as_deref(),
        Some(&b"used2"[..])
    );
    assert_eq!(store.take_record(&key).await.unwrap(), None);

    // A record and a ticket of the same name do not meet.
    store
        .put_record("ST-1-x", b"r", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(store.ticket("ST-1-x").await.unwrap().is_none());
    store.remove_record("ST-1-x").await.unwrap();
    assert_eq!(store.record("ST-1-x").await.unwrap(), None);

    // Records expire, and a swap keeps the expiry.
    let short = format!("test:{}", unique("R"));
    store
        .put_record(&short, b"v", Duration::from_millis(300))
        .await
        .unwrap();
    assert!(store.swap_record(&short, b"w").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(store.record(&short).await.unwrap(), None);
    assert_eq!(store.swap_record(&short, b"z").await.unwrap(), None);
}

async fn concurrent_swaps_see_the_original_once<S: TicketStore>(store: Arc<S>) {
    let key = format!("test:{}", unique("R"));
    store
        .put_record(&key, b"original", Duration::from_secs(30))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move { store.swap_record(&key, b"used").await.unwrap() })
        })
        .collect();
    let mut originals = 0;
    for t in tasks {
        if t.await.unwrap().as_deref() == Some(&b"original"[..]) {
            originals += 1;
        }
    }
    assert_eq!(originals, 1);
}

async fn published_key_ids_accumulate<S: TicketStore>(store: Arc<S>) {
    let a = unique("K");
    let b = unique("K");
    let c = unique("K");
    store
        .publish_key_ids(&[a.clone(), b.clone()])
        .await
        .unwrap();
    store
        .publish_key_ids(&[b.clone(), c.clone()])
        .await
        .unwrap();
    store.publish_key_ids(&[]).await.unwrap();
    let ids = store.published_key_ids().await.unwrap();
    for id in [&a, &b, &c] {
        assert_eq!(ids.iter().filter(|x| *x == id).count(), 1, "{id} once");
    }
}

fn now() -> u64 {
    SystemClock.now()
}

fn st(id: &str) -> Ticket {
    Ticket::Service(ServiceTicket {
        id: id.to_owned(),
        session_id: "TGT-x".into(),
        service: "https://app.example.org/".into(),
        from_new_login: true,
    })
}

fn session(id: &str, lifetime: Duration) -> TicketGrantingTicket {
    TicketGrantingTicket {
        id: id.to_owned(),
        principal: Arc::new(Principal::new("alice").with_attribute("mail", &["a@example.org"])),
        authenticated_at: now(),
        expires_at: now() + lifetime.as_millis() as u64,
        long_term: false,
        services: vec![],
        // Kept by every store (a stepped-up session must stay stepped up).
        methods: crate::AuthnMethods::of(crate::AuthnMethod::Password)
            .with(crate::AuthnMethod::HardwareKey),
    }
}

fn record(n: usize) -> ServiceRecord {
    ServiceRecord {
        ticket_id: format!("ST-{n}"),
        service: format!("https://app{n}.example.org/"),
        logout: LogoutMode::BackChannel,
    }
}

fn unique(prefix: &str) -> String {
    crate::ids::new_ticket_id(prefix)
}

fn new_session_id() -> String {
    crate::ids::new_session_id("TGT")
}

fn st_of(session_id: &str) -> Ticket {
    let id = crate::ids::new_session_ticket_id("ST", session_id).expect("a session id");
    Ticket::Service(ServiceTicket {
        id,
        session_id: session_id.to_owned(),
        service: "https://app.example.org/".into(),
        from_new_login: false,
    })
}

/// Grants a service ticket in the session with `record(n)`; false when gone.
async fn grant<S: TicketStore>(store: &S, session_id: &str, n: usize) -> bool {
    let mut r = record(n);
    let ticket = st_of(session_id);
    r.ticket_id = ticket.id().to_owned();
    store
        .grant_ticket(
            session_id,
            Duration::from_secs(30),
            ticket,
            Duration::from_secs(10),
            Some(r),
        )
        .await
        .unwrap()
}

async fn one_time_consumption<S: TicketStore>(store: Arc<S>) {
    let id = unique("ST");
    store
        .add_ticket(st(&id), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        store.ticket(&id).await.unwrap(),
        Some(st(&id)),
        "readable before consumption"
    );
    assert_eq!(store.consume_ticket(&id).await.unwrap(), Some(st(&id)));
    assert_eq!(
        store.consume_ticket(&id).await.unwrap(),
        None,
        "second consumption"
    );
    assert_eq!(store.ticket(&id).await.unwrap(), None);
}

/// Grants `ticket` in the session without a logout record.
async fn grant_plain<S: TicketStore>(store: &S, session_id: &str, ticket: Ticket) -> bool {
    store
        .grant_ticket(
            session_id,
            Duration::from_secs(30),
            ticket,
            Duration::from_secs(10),
            None,
        )
        .await
        .unwrap()
}

async fn redeeming_reads_the_session<S: TicketStore>(store: Arc<S>) {
    let s = session(&new_session_id(), Duration::from_secs(60));
    store
        .create_session(&s, Duration::from_secs(30))
        .await
        .unwrap();
    let ticket = st_of(&s.id);
    let id = ticket.id().to_owned();
    let granted = grant_plain(&*store, &s.id, ticket.clone()).await;
    assert!(granted, "session alive");
    let (t, owner) = store.redeem_ticket(&id).await.unwrap().unwrap();
    assert_eq!(t, ticket);
    let owner = owner.expect("the session");
    assert_eq!(owner.id, s.id);
    assert_eq!(owner.principal, s.principal);
    assert!(owner.services.is_empty(), "no record asked for");
    assert_eq!(
        store.redeem_ticket(&id).await.unwrap(),
        None,
        "redeemed once"
    );

    // A ticket outliving its session is redeemed without one.
    let orphan = st_of(&s.id);
    let orphan_id = orphan.id().to_owned();
    grant_plain(&*store, &s.id, orphan).await;
    store.remove_session(&s.id).await.unwrap().unwrap();
    let (_, owner) = store.redeem_ticket(&orphan_id).await.unwrap().unwrap();
    assert_eq!(owner, None);

    // Many racers, one winner.
    let s = session(&new_session_id(), Duration::from_secs(60));
    store
        .create_session(&s, Duration::from_secs(30))
        .await
        .unwrap();
    let ticket = st_of(&s.id);
    let id = ticket.id().to_owned();
    grant_plain(&*store, &s.id, ticket).await;
    let racers: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move { store.redeem_ticket(&id).await.unwrap().is_some() })
        })
        .collect();
    let mut winners = 0;
    for r in racers {
        winners += usize::from(r.await.unwrap());
    }
    assert_eq!(winners, 1);
}

async fn concurrent_consumption_has_one_winner<S: TicketStore>(store: Arc<S>) {
    for _ in 0..20 {
        let id = unique("ST");
        store
            .add_ticket(st(&id), Duration::from_secs(10))
            .await
            .unwrap();
        let racers: Vec<_> = (0..32)
            .map(|_| {
                let store = store.clone();
                let id = id.clone();
                tokio::spawn(async move { store.consume_ticket(&id).await.unwrap().is_some() })
            })
            .collect();
        let mut winners = 0;
        for r in racers {
            winners += usize::from(r.await.unwrap());
        }
        assert_eq!(winners, 1, "exactly one racer consumes a ticket");
    }
}

async fn tickets_expire<S: TicketStore>(store: Arc<S>) {
    let id = unique("ST");
    store
        .add_ticket(st(&id), Duration::from_millis(150))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.ticket(&id).await.unwrap(), None);
    assert_eq!(store.consume_ticket(&id).await.unwrap(), None);
}

async fn session_lifecycle<S: TicketStore>(store: Arc<S>) {
    let s = session(&new_session_id(), Duration::from_secs(60));
    let idle = Duration::from_secs(30);
    store.create_session(&s, idle).await.unwrap();
    assert_eq!(store.session(&s.id).await.unwrap().as_ref(), Some(&s));
    assert!(grant(&*store, &s.id, 1).await);
    assert!(grant(&*store, &s.id, 2).await);
    let touched = store.touch_session(&s.id, idle).await.unwrap().unwrap();
    let services: Vec<_> = touched.services.iter().map(|r| r.service.clone()).collect();
    // The head: the session as created (methods too), without the list.
    let head = store.session_head(&s.id).await.unwrap().unwrap();
    assert_eq!(head.methods, s.methods);
    assert!(head.services.is_empty());
    assert_eq!(
        TicketGrantingTicket {
            services: vec![],
            ..head.clone()
        },
        s
    );
    assert_eq!(store.session_head(&new_session_id()).await.unwrap(), None);
    // A step-up adds methods in place: same id, same list.
    let stepped = TicketGrantingTicket {
        methods: s.methods.with(crate::AuthnMethod::Totp),
        ..head.clone()
    };
    assert!(store.update_session_methods(&stepped).await.unwrap());
    let after = store.session(&s.id).await.unwrap().unwrap();
    assert_eq!(after.methods, stepped.methods);
    assert_eq!(after.services.len(), services.len(), "the list is kept");
    let gone = TicketGrantingTicket {
        id: new_session_id(),
        ..stepped
    };
    assert!(!store.update_session_methods(&gone).await.unwrap());
    assert_eq!(
        services,
        vec![record(1).service, record(2).service],
        "services kept in order"
    );
    let removed = store.remove_session(&s.id).await.unwrap().unwrap();
    assert_eq!(removed.services.len(), 2);
    assert_eq!(
        store.remove_session(&s.id).await.unwrap(),
        None,
        "removed once"
    );
    assert_eq!(store.session(&s.id).await.unwrap(), None);
    let late = st_of(&s.id);
    let late_id = late.id().to_owned();
    let granted = store
        .grant_ticket(&s.id, idle, late, Duration::from_secs(10), Some(record(3)))
        .await
        .unwrap();
    assert!(!granted, "no grant after removal");
    assert_eq!(
        store.session(&s.id).await.unwrap(),
        None,
        "the grant did not revive it"
    );
    assert_eq!(
        store.ticket(&late_id).await.unwrap(),
        None,
        "nor stored its ticket"
    );
}

async fn session_index_is_consistent_under_concurrency<S: TicketStore>(store: Arc<S>) {
    let s = session(&new_session_id(), Duration::from_secs(60));
    store
        .create_session(&s, Duration::from_secs(30))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let store = store.clone();
            let id = s.id.clone();
            tokio::spawn(async move { grant(&*store, &id, n).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap());
    }
    let got = store.session(&s.id).await.unwrap().unwrap();
    assert_eq!(got.services.len(), 50, "no append lost");

    // Logout racing with logins: every append either lands before the
    // removal (and is returned by it) or reports that the session is gone.
    let s = session(&new_session_id(), Duration::from_secs(60));
    store
        .create_session(&s, Duration::from_secs(30))
        .await
        .unwrap();
    let appends: Vec<_> = (0..40)
        .map(|n| {
            let store = store.clone();
            let id = s.id.clone();
            tokio::spawn(async move { (n, grant(&*store, &id, n).await) })
        })
        .collect();
    let removers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            let id = s.id.clone();
            tokio::spawn(async move { store.remove_session(&id).await.unwrap() })
        })
        .collect();
    let mut accepted = Vec::new();
    for a in appends {
        let (n, ok) = a.await.unwrap();
        if ok {
            accepted.push(n);
        }
    }
    let mut removed = Vec::new();
    for r in removers {
        if let Some(s) = r.await.unwrap() {
            removed.push(s);
        }
    }
    assert_eq!(removed.len(), 1, "exactly one logout gets the session");
    let mut notified: Vec<_> = removed[0]
        .services
        .iter()
        .map(|r| r.service.clone())
        .collect();
    notified.sort();
    let mut expected: Vec<_> = accepted.iter().map(|n| record(*n).service).collect();
    expected.sort();
    assert_eq!(notified, expected, "every accepted service is notified");
}

async fn session_hard_limit_beats_idle<S: TicketStore>(store: Arc<S>) {
    let s = session(&new_session_id(), Duration::from_millis(200));
    store
        .create_session(&s, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(store
        .touch_session(&s.id, Duration::from_secs(30))
        .await
        .unwrap()
        .is_some());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        store
            .touch_session(&s.id, Duration::from_secs(30))
            .await
            .unwrap(),
        None
    );
}

async fn session_idle_limit_is_extended_by_use<S: TicketStore>(store: Arc<S>) {
    let idle = Duration::from_millis(400);
    let s = session(&new_session_id(), Duration::from_secs(60));
    store.create_session(&s, idle).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            store.touch_session(&s.id, idle).await.unwrap().is_some(),
            "kept alive by use"
        );
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        store.session(&s.id).await.unwrap(),
        None,
        "idle session ends"
    );
}

async fn large_values_round_trip<S: TicketStore>(store: Arc<S>) {
    let mut s = session(&new_session_id(), Duration::from_secs(60));
    let mut principal = Principal::new("big");
    for a in 0..100 {
        principal.attributes.insert(
            format!("attribute{a}"),
            (0..10)
                .map(|v| format!("{v}-{}", "é<&>\"'x".repeat(20)))
                .collect(),
        );
    }
    s.principal = Arc::new(principal);
    store
        .create_session(&s, Duration::from_secs(30))
        .await
        .unwrap();
    for n in 0..200 {
        assert!(grant(&*store, &s.id, n).await);
    }
    let got = store.remove_session(&s.id).await.unwrap().unwrap();
    assert_eq!(got.principal, s.principal);
    // The logout list keeps the most recent records, in order.
    let kept: Vec<_> = got.services.iter().map(|r| r.service.clone()).collect();
    let expected: Vec<_> = (200 - crate::store::MAX_SERVICE_RECORDS..200)
        .map(|n| record(n).service)
        .collect();
    assert_eq!(kept, expected);
}

async fn unknown_and_malformed_keys<S: TicketStore>(store: Arc<S>) {
    for key in [
        "",
        "ST-unknown",
        "\u{0}",
        "TGT-1-*?[]{}",
        &"x".repeat(10_000),
        "ключ",
    ] {
        assert_eq!(store.ticket(key).await.unwrap(), None);
        assert_eq!(store.consume_ticket(key).await.unwrap(), None);
        assert_eq!(store.session(key).await.unwrap(), None);
        assert_eq!(store.remove_session(key).await.unwrap(), None);
        assert!(!store
            .grant_ticket(
                key,
                Duration::from_secs(1),
                st(&unique("ST")),
                Duration::from_secs(1),
                None
            )
            .await
            .unwrap());
        assert_eq!(store.redeem_ticket(key).await.unwrap(), None);
    }
    // A session id is not a ticket and a ticket id is not a session.
    let s = session(&new_session_id(), Duration::from_secs(60));
    store
        .create_session(&s, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(store.consume_ticket(&s.id).await.unwrap(), None);
    assert!(
        store.session(&s.id).await.unwrap().is_some(),
        "not consumed as a ticket"
    );
    let flow = unique("LF");
    let t = Ticket::LoginFlow(LoginFlow {
        id: flow.clone(),
        service: None,
    });
    store
        .add_ticket(t.clone(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(store.session(&flow).await.unwrap(), None);
    assert_eq!(store.remove_session(&flow).await.unwrap(), None);
    assert_eq!(
        store.consume_ticket(&flow).await.unwrap(),
        Some(t),
        "not removed as a session"
    );
}

async fn failure_counters<S: TicketStore>(store: Arc<S>) {
    let key = format!("user:{}", unique("U"));
    let short = Duration::from_millis(300);
    assert_eq!(store.failures(&key).await.unwrap(), 0);
    for n in 1..=3 {
        assert!(store.reserve_attempt(&key, 3, short).await.unwrap());
        assert_eq!(store.failures(&key).await.unwrap(), n);
    }
    assert!(
        !store.reserve_attempt(&key, 3, short).await.unwrap(),
        "the limit holds"
    );
    assert_eq!(
        store.failures(&key).await.unwrap(),
        3,
        "a refusal counts nothing"
    );
    store.release_attempt(&key).await.unwrap();
    assert_eq!(store.failures(&key).await.unwrap(), 2);
    assert!(store.reserve_attempt(&key, 3, short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.failures(&key).await.unwrap(), 0, "window over");
    store.release_attempt(&key).await.unwrap();
    assert_eq!(store.failures(&key).await.unwrap(), 0, "never below zero");
    let long = Duration::from_secs(10);
    assert!(store.reserve_attempt(&key, 3, long).await.unwrap());
    assert_eq!(store.failures(&key).await.unwrap(), 1);
    store.clear_failures(&key).await.unwrap();
    assert_eq!(store.failures(&key).await.unwrap(), 0);

    // Concurrent reservations: exactly the limit gets through.
    let key = format!("ip:{}", unique("I"));
    let attempts = (0..40).map(|_| {
        let store = store.clone();
        let key = key.clone();
        tokio::spawn(async move { store.reserve_attempt(&key, 7, long).await.unwrap() })
    });
    let mut granted = 0;
    for a in attempts {
        if a.await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 7);
    assert_eq!(store.failures(&key).await.unwrap(), 7);

    // A counter key never collides with a ticket of the same name.
    let id = unique("ST");
    store
        .add_ticket(st(&id), Duration::from_secs(10))
        .await
        .unwrap();
    store.reserve_attempt(&id, 5, long).await.unwrap();
    assert!(store.consume_ticket(&id).await.unwrap().is_some());
}
