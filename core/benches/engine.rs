//! Grant + validate of a service ticket through the engine, in memory.
//! Run: `cargo bench -p castellan-core --bench engine`.

use async_trait::async_trait;
use castellan_core::{
    Engine, LogoutMode, MemoryStore, Principal, ProxyCallback, RegisteredService, ServiceRegistry,
    StaticUserAuthenticator, SystemClock, ThrottlePolicy, TicketPolicy, ValidationRequest,
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Arc;

struct NoCallback;

#[async_trait]
impl ProxyCallback for NoCallback {
    async fn deliver(&self, _: &str, _: &str, _: &str) -> bool {
        false
    }
}

fn grant_and_validate(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let registry = ServiceRegistry::new(vec![RegisteredService::new(
        "app",
        r"https://app\.example\.org(/.*)?",
        vec!["mail".into(), "cn".into()],
        None,
        LogoutMode::BackChannel,
    )
    .unwrap()]);
    let engine = Engine::new(
        Arc::new(MemoryStore::default()),
        Arc::new(registry),
        Arc::new(StaticUserAuthenticator::new(vec![]).unwrap()),
        ThrottlePolicy::default(),
        TicketPolicy::default(),
        Arc::new(SystemClock),
        Arc::new(NoCallback),
    );
    let principal = Arc::new(
        Principal::new("casuser")
            .with_attribute("mail", &["casuser@example.org"])
            .with_attribute("cn", &["CAS User"]),
    );
    let service = "https://app.example.org/home";
    c.bench_function("engine: grant + validate service ticket", |b| {
        b.iter(|| {
            rt.block_on(async {
                // A fresh session per round keeps the session's service list short,
                // as in real use.
                let session = engine.open_session(principal.clone(), false).await.unwrap();
                let st = engine
                    .grant_service_ticket(&session.id, service, false)
                    .await
                    .unwrap();
                let a = engine
                    .validate(ValidationRequest {
                        ticket: &st.id,
                        service,
                        renew: false,
                        pgt_url: None,
                        allow_proxy_tickets: false,
                        in_process: false,
                    })
                    .await
                    .unwrap();
                assert_eq!(a.principal.id, "casuser");
            })
        })
    });
}

criterion_group!(benches, grant_and_validate);
criterion_main!(benches);
