//! TOTP verifications per second: the check alone (open the sealed
//! secret, compute the three codes of the window, compare), and
//! `verify_otp` against SQLite (read the factors, check, record the step).

use castellan_mfa::{
    bench::SealedTotp, totp_code_at, Factors, KeySource, MfaSettings, StoreLocation,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const T0: u64 = 1_700_000_015;

fn verify_path(c: &mut Criterion) {
    let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let sealed = SealedTotp::new(secret);
    let code = totp_code_at(secret, T0).unwrap();
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    let mut g = c.benchmark_group("totp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check_accepted", |b| {
        b.iter(|| assert!(sealed.verify(std::hint::black_box(&code), T0).is_some()))
    });
    g.bench_function("check_refused", |b| {
        b.iter(|| sealed.verify(std::hint::black_box(&wrong), T0))
    });
    g.finish();
}

fn verify_otp_sqlite(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = rt
        .block_on(Factors::open(MfaSettings {
            store: StoreLocation::Sqlite {
                path: dir.path().join("mfa.sqlite"),
            },
            issuer: "Castellan".into(),
            key: KeySource::Configured([7; 32]),
            rp_origin: url::Url::parse("https://id.example.org").unwrap(),
            rp_id: "id.example.org".into(),
            rp_name: "Castellan".into(),
        }))
        .unwrap();
    // A thousand other users, so the lookups go through the index.
    let secret = rt.block_on(async {
        for i in 0..1000 {
            let e = f.new_totp(&format!("user{i}"));
            let code = totp_code_at(&e.secret, T0).unwrap();
            f.confirm_totp(&format!("user{i}"), &e.secret, &code, "phone", T0)
                .await
                .unwrap();
        }
        let e = f.new_totp("alice");
        let code = totp_code_at(&e.secret, T0).unwrap();
        f.confirm_totp("alice", &e.secret, &code, "phone", T0)
            .await
            .unwrap();
        e.secret
    });
    let mut g = c.benchmark_group("verify_otp_sqlite");
    g.throughput(Throughput::Elements(1));
    // Each iteration a new step: a read, the check and the UPDATE.
    let mut now = T0;
    g.bench_function("accepted", |b| {
        b.iter(|| {
            now += 30;
            let code = totp_code_at(&secret, now).unwrap();
            rt.block_on(f.verify_otp("alice", &code, now)).unwrap();
        })
    });
    // A wrong code: the read and the check, no write.
    let wrong = {
        let right = totp_code_at(&secret, now).unwrap();
        format!(
            "{:06}",
            (right.parse::<u32>().unwrap() + 500_000) % 1_000_000
        )
    };
    g.bench_function("refused", |b| {
        b.iter(|| rt.block_on(f.verify_otp("alice", &wrong, now)).unwrap_err())
    });
    g.finish();
    rt.block_on(f.close());
}

criterion_group!(benches, verify_path, verify_otp_sqlite);
criterion_main!(benches);
