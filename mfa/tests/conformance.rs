//! One suite for every store: each case gets a fresh store from a
//! `Backend` (SQLite file, or a database of a real PostgreSQL), in the
//! manner of the ticket stores' shared suite.

mod support;

use castellan_mfa::{
    totp_code_at, FactorKind, Factors, KeySource, MfaError, MfaSettings, StoreLocation, Verified,
};
use std::sync::Arc;
use support::softkey::SoftKey;

const ORIGIN: &str = "https://id.example.org";
const RP_ID: &str = "id.example.org";
/// A time well inside a step (step 56666667 starts at 1700000010).
const T0: u64 = 1_700_000_015;

enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(support::postgres::Postgres),
}

impl Backend {
    /// The location of store `name` (created empty on first use).
    async fn location(&self, name: &str) -> StoreLocation {
        match self {
            Backend::Sqlite(dir) => StoreLocation::Sqlite {
                path: dir.path().join(format!("{name}.sqlite")),
            },
            Backend::Postgres(pg) => StoreLocation::Postgres {
                url: pg.database(name).await,
            },
        }
    }
}

fn settings(store: StoreLocation, key: [u8; 32]) -> MfaSettings {
    MfaSettings {
        store,
        issuer: "Castellan".into(),
        key: KeySource::Configured(key),
        rp_origin: url::Url::parse(ORIGIN).unwrap(),
        rp_id: RP_ID.into(),
        rp_name: "Castellan".into(),
    }
}

async fn open(backend: &Backend, name: &str) -> (Factors, StoreLocation) {
    let location = backend.location(name).await;
    let f = Factors::open(settings(location.clone(), [42; 32]))
        .await
        .expect("open");
    (f, location)
}

/// Enrols a TOTP for `user` at T0; returns the factor id and the secret.
async fn enrol(f: &Factors, user: &str) -> (String, String) {
    let e = f.new_totp(user);
    let code = totp_code_at(&e.secret, T0).unwrap();
    let info = f
        .confirm_totp(user, &e.secret, &code, "phone", T0)
        .await
        .expect("confirm");
    (info.id, e.secret)
}

fn code(secret: &str, t: u64) -> String {
    totp_code_at(secret, t).unwrap()
}

async fn enrol_and_verify(b: &Backend) {
    let (f, _) = open(b, "enrol").await;
    assert!(!f.has_factor("alice").await.unwrap());
    let e = f.new_totp("alice");
    assert!(
        e.uri.starts_with("otpauth://totp/Castellan:alice?secret="),
        "{}",
        e.uri
    );
    assert!(e.uri.contains(&format!("secret={}&", e.secret)));
    assert!(e.qr_svg.starts_with("<svg"));
    // Nothing is saved before a code proves the secret.
    assert!(f.list("alice").await.unwrap().factors.is_empty());
    let wrong = format!(
        "{:06}",
        (code(&e.secret, T0).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    assert!(matches!(
        f.confirm_totp("alice", &e.secret, &wrong, "phone", T0)
            .await,
        Err(MfaError::InvalidCode)
    ));
    assert!(!f.has_factor("alice").await.unwrap());
    let info = f
        .confirm_totp("alice", &e.secret, &code(&e.secret, T0), "  phone ", T0)
        .await
        .unwrap();
    assert_eq!(info.kind, FactorKind::Totp);
    assert_eq!(info.label, "phone");
    assert!(f.has_factor("alice").await.unwrap());
    let listed = f.list("alice").await.unwrap();
    assert_eq!(listed.factors, vec![info.clone()]);
    assert_eq!(listed.recovery_codes_left, 0);
    // The enrolment code's step is used: the same code is not a login.
    assert!(matches!(
        f.verify_otp("alice", &code(&e.secret, T0), T0).await,
        Err(MfaError::Replayed)
    ));
    let later = T0 + 90;
    assert_eq!(
        f.verify_otp("alice", &code(&e.secret, later), later)
            .await
            .unwrap(),
        Verified::Totp {
            factor: info.id.clone()
        }
    );
    // Spaces typed in the code are fine.
    let t = later + 30;
    let c = code(&e.secret, t);
    let spaced = format!("{} {}", &c[..3], &c[3..]);
    assert!(f.verify_otp("alice", &spaced, t).await.is_ok());
    assert_eq!(
        f.get("alice", &info.id).await.unwrap().last_used_at,
        Some(t)
    );
    f.close().await;
}

async fn skew(b: &Backend) {
    let (f, _) = open(b, "skew").await;
    let (id, secret) = enrol(&f, "alice").await;
    let now = T0 + 300;
    // Previous, current, next step: in that order (each later than the last accepted).
    for t in [now - 30, now, now + 30] {
        assert_eq!(
            f.verify_otp("alice", &code(&secret, t), now).await.unwrap(),
            Verified::Totp { factor: id.clone() },
            "offset {}",
            t as i64 - now as i64
        );
    }
    let (_, secret) = enrol(&f, "bob").await;
    let now = T0 + 600;
    for t in [now - 60, now + 60, now - 3600] {
        assert!(
            matches!(
                f.verify_otp("bob", &code(&secret, t), now).await,
                Err(MfaError::InvalidCode)
            ),
            "offset {}",
            t as i64 - now as i64
        );
    }
    f.close().await;
}

async fn replay(b: &Backend) {
    let (f, _) = open(b, "replay").await;
    let (_, secret) = enrol(&f, "alice").await;
    let now = T0 + 300;
    let c = code(&secret, now);
    assert!(f.verify_otp("alice", &c, now).await.is_ok());
    assert!(matches!(
        f.verify_otp("alice", &c, now).await,
        Err(MfaError::Replayed)
    ));
    assert!(matches!(
        f.verify_otp("alice", &c, now + 29).await,
        Err(MfaError::Replayed)
    ));
    // A code of an earlier step of the window, once a later one was used.
    let now = T0 + 600;
    assert!(f
        .verify_otp("alice", &code(&secret, now + 30), now)
        .await
        .is_ok());
    assert!(matches!(
        f.verify_otp("alice", &code(&secret, now), now).await,
        Err(MfaError::Replayed)
    ));
    f.close().await;
}

async fn other_users_code(b: &Backend) {
    let (f, _) = open(b, "other").await;
    let (_, alice) = enrol(&f, "alice").await;
    let (_, bob) = enrol(&f, "bob").await;
    let now = T0 + 300;
    let alice_code = code(&alice, now);
    // Bob's code for Alice (unless both secrets give one code, one in 10^6).
    if code(&bob, now) != alice_code {
        assert!(matches!(
            f.verify_otp("alice", &code(&bob, now), now).await,
            Err(MfaError::InvalidCode)
        ));
    }
    assert!(matches!(
        f.verify_otp("carol", &alice_code, now).await,
        Err(MfaError::InvalidCode)
    ));
    assert!(f.verify_otp("alice", &alice_code, now).await.is_ok());
    f.close().await;
}

async fn recovery_codes(b: &Backend) {
    let (f, _) = open(b, "recovery").await;
    enrol(&f, "alice").await;
    let rc = f.new_recovery_codes("alice");
    assert_eq!(rc.codes.len(), 10);
    f.save_recovery_codes("alice", &rc.hashes).await.unwrap();
    assert_eq!(f.list("alice").await.unwrap().recovery_codes_left, 10);
    // Recovery codes alone are not a factor.
    f.save_recovery_codes("bob", &f.new_recovery_codes("bob").hashes)
        .await
        .unwrap();
    assert!(!f.has_factor("bob").await.unwrap());
    // Another user's code is not this user's.
    assert!(matches!(
        f.verify_otp("bob", &rc.codes[0], T0).await,
        Err(MfaError::InvalidCode)
    ));
    assert_eq!(
        f.verify_otp("alice", &rc.codes[0], T0).await.unwrap(),
        Verified::RecoveryCode { left: 9 }
    );
    assert!(matches!(
        f.verify_otp("alice", &rc.codes[0], T0).await,
        Err(MfaError::InvalidCode)
    ));
    // Typed loosely: upper case, no dash.
    let loose = rc.codes[1].replace('-', " ").to_uppercase();
    assert_eq!(
        f.verify_otp("alice", &loose, T0).await.unwrap(),
        Verified::RecoveryCode { left: 8 }
    );
    assert_eq!(f.list("alice").await.unwrap().recovery_codes_left, 8);
    // Regeneration: the old codes stop working.
    let fresh = f.new_recovery_codes("alice");
    f.save_recovery_codes("alice", &fresh.hashes).await.unwrap();
    assert_eq!(f.list("alice").await.unwrap().recovery_codes_left, 10);
    assert!(matches!(
        f.verify_otp("alice", &rc.codes[2], T0).await,
        Err(MfaError::InvalidCode)
    ));
    assert!(f.verify_otp("alice", &fresh.codes[2], T0).await.is_ok());
    // Foreign "hashes" are refused.
    assert!(matches!(
        f.save_recovery_codes("alice", &["x".repeat(64)]).await,
        Err(MfaError::InvalidInput(_))
    ));
    f.close().await;
}

async fn enrol_with_recovery_in_one_step(b: &Backend) {
    let (f, _) = open(b, "enrol_totp").await;
    let e = f.new_totp("alice");
    let rc = f.new_recovery_codes("alice");
    assert!(f
        .enrol_totp("alice", &e.secret, "000000x", "phone", &rc.hashes, T0)
        .await
        .is_err());
    let listed = f.list("alice").await.unwrap();
    assert!(listed.factors.is_empty());
    assert_eq!(listed.recovery_codes_left, 0);
    let info = f
        .enrol_totp(
            "alice",
            &e.secret,
            &code(&e.secret, T0),
            "phone",
            &rc.hashes,
            T0,
        )
        .await
        .unwrap();
    let listed = f.list("alice").await.unwrap();
    assert_eq!(listed.factors, vec![info]);
    assert_eq!(listed.recovery_codes_left, 10);
    f.close().await;
}

async fn remove_and_reset(b: &Backend) {
    let (f, _) = open(b, "remove").await;
    let (first, _) = enrol(&f, "alice").await;
    let (second, _) = enrol(&f, "alice").await;
    let (bobs, _) = enrol(&f, "bob").await;
    f.save_recovery_codes("alice", &f.new_recovery_codes("alice").hashes)
        .await
        .unwrap();
    // Not Alice's factor: untouched.
    assert!(!f.remove("alice", &bobs).await.unwrap());
    assert!(f.has_factor("bob").await.unwrap());
    assert!(f.remove("alice", &first).await.unwrap());
    assert!(!f.remove("alice", &first).await.unwrap());
    let listed = f.list("alice").await.unwrap();
    assert_eq!(
        listed
            .factors
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        [second.as_str()]
    );
    assert!(matches!(
        f.get("alice", &first).await,
        Err(MfaError::NotFound)
    ));
    assert_eq!(f.reset("alice").await.unwrap(), 1);
    let listed = f.list("alice").await.unwrap();
    assert!(listed.factors.is_empty());
    assert_eq!(listed.recovery_codes_left, 0);
    assert!(!f.has_factor("alice").await.unwrap());
    assert_eq!(f.reset("alice").await.unwrap(), 0);
    assert!(f.has_factor("bob").await.unwrap());
    f.close().await;
}

async fn secrets_sealed_at_rest(b: &Backend) {
    let (f, _) = open(b, "sealed").await;
    let (alice_id, alice) = enrol(&f, "alice").await;
    let (bob_id, bob) = enrol(&f, "bob").await;
    let stored = f
        .stored_secret(&alice_id)
        .await
        .unwrap()
        .expect("a stored secret");
    assert!(stored.starts_with("v1."), "{stored}");
    assert!(
        !stored.to_uppercase().contains(&alice[..16]),
        "the base32 secret is in the row"
    );
    // Alice's sealed secret copied into Bob's row does not decrypt there:
    // neither Alice's codes nor Bob's work for Bob any more.
    f.overwrite_stored_secret(&bob_id, &stored).await.unwrap();
    let now = T0 + 300;
    assert!(matches!(
        f.verify_otp("bob", &code(&alice, now), now).await,
        Err(MfaError::InvalidCode)
    ));
    assert!(matches!(
        f.verify_otp("bob", &code(&bob, now), now).await,
        Err(MfaError::InvalidCode)
    ));
    assert!(f.verify_otp("alice", &code(&alice, now), now).await.is_ok());
    f.close().await;
}

async fn key_mismatch(b: &Backend) {
    let (f, location) = open(b, "keys").await;
    enrol(&f, "alice").await;
    f.close().await;
    match Factors::open(settings(location.clone(), [43; 32])).await {
        Err(MfaError::KeyMismatch(m)) => assert!(m.contains("same key"), "{m}"),
        other => panic!("opened with another key: {other:?}"),
    }
    let f = Factors::open(settings(location, [42; 32]))
        .await
        .expect("the right key opens");
    assert!(f.has_factor("alice").await.unwrap());
    f.close().await;
}

/// Two nodes on one store verify one code at once: exactly one wins.
async fn concurrent_verification(b: &Backend) {
    let (a, location) = open(b, "race").await;
    let node_b = Factors::open(settings(location, [42; 32])).await.unwrap();
    let (a, node_b) = (Arc::new(a), Arc::new(node_b));
    let (_, secret) = enrol(&a, "alice").await;
    for round in 0..10u64 {
        let now = T0 + 300 + round * 30;
        let c = code(&secret, now);
        let (x, y) = tokio::join!(
            {
                let (f, c) = (a.clone(), c.clone());
                tokio::spawn(async move { f.verify_otp("alice", &c, now).await })
            },
            {
                let (f, c) = (node_b.clone(), c.clone());
                tokio::spawn(async move { f.verify_otp("alice", &c, now).await })
            }
        );
        let results = [x.unwrap(), y.unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        let replays = results
            .iter()
            .filter(|r| matches!(r, Err(MfaError::Replayed)))
            .count();
        assert_eq!((wins, replays), (1, 1), "round {round}: {results:?}");
    }
    // A recovery code, too.
    let rc = a.new_recovery_codes("alice");
    a.save_recovery_codes("alice", &rc.hashes).await.unwrap();
    let c = rc.codes[0].clone();
    let (x, y) = tokio::join!(
        {
            let (f, c) = (a.clone(), c.clone());
            tokio::spawn(async move { f.verify_otp("alice", &c, T0).await })
        },
        {
            let (f, c) = (node_b.clone(), c.clone());
            tokio::spawn(async move { f.verify_otp("alice", &c, T0).await })
        }
    );
    let results = [x.unwrap(), y.unwrap()];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    a.close().await;
    node_b.close().await;
}

async fn input_limits(b: &Backend) {
    let (f, _) = open(b, "limits").await;
    let e = f.new_totp("alice");
    let c = code(&e.secret, T0);
    assert!(matches!(
        f.confirm_totp("alice", &e.secret, &c, &"x".repeat(101), T0)
            .await,
        Err(MfaError::InvalidInput(_))
    ));
    assert!(matches!(
        f.confirm_totp("alice", &e.secret, &" ".repeat(65), "phone", T0)
            .await,
        Err(MfaError::InvalidCode)
    ));
    assert!(matches!(
        f.confirm_totp("alice", "not base32!", &c, "phone", T0)
            .await,
        Err(MfaError::InvalidInput(_))
    ));
    f.confirm_totp("alice", &e.secret, &c, &"é".repeat(100), T0)
        .await
        .unwrap();
    let long = format!("{}{}", " ".repeat(60), code(&e.secret, T0 + 60));
    assert!(matches!(
        f.verify_otp("alice", &long, T0 + 60).await,
        Err(MfaError::InvalidCode)
    ));
    assert!(matches!(
        f.verify_otp("alice", &"1".repeat(10_000), T0).await,
        Err(MfaError::InvalidCode)
    ));
    assert!(matches!(
        f.verify_otp("alice", "", T0).await,
        Err(MfaError::InvalidCode)
    ));
    // A user name PostgreSQL cannot hold is nobody, not a store failure.
    assert!(!f.has_factor("al\0ice").await.unwrap());
    assert!(f.list("al\0ice").await.unwrap().factors.is_empty());
    assert!(matches!(
        f.verify_otp("al\0ice", "123456", T0).await,
        Err(MfaError::InvalidCode)
    ));
    assert!(f
        .start_passkey_authentication("al\0ice")
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        f.confirm_totp("al\0ice", &e.secret, &c, "phone", T0).await,
        Err(MfaError::InvalidInput(_))
    ));
    f.close().await;
}

async fn login(f: &Factors, counter: u32, key: &SoftKey) -> Result<Verified, MfaError> {
    let (options, state) = f
        .start_passkey_authentication("alice")
        .await
        .unwrap()
        .unwrap();
    let allowed = options["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(allowed, 2);
    assert_eq!(options["publicKey"]["userVerification"], "preferred");
    f.finish_passkey_authentication_at("alice", &state, &key.assert(&options, counter), T0 + 60)
        .await
}

async fn passkeys(b: &Backend) {
    let (f, _) = open(b, "passkeys").await;
    assert!(f
        .start_passkey_authentication("alice")
        .await
        .unwrap()
        .is_none());
    let key = SoftKey::new(ORIGIN, RP_ID, "cross-platform");
    let (options, state) = f.start_passkey_registration("alice").await.unwrap();
    assert_eq!(options["publicKey"]["rp"]["id"], RP_ID);
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["userVerification"],
        "preferred"
    );
    // The state is Alice's.
    assert!(f
        .finish_passkey_registration("bob", &state, &key.register(&options, 0), "key")
        .await
        .is_err());
    let info = f
        .finish_passkey_registration_at("alice", &state, &key.register(&options, 0), "YubiKey", T0)
        .await
        .unwrap();
    assert_eq!(info.kind, FactorKind::Passkey { hardware: true });
    assert!(f.has_factor("alice").await.unwrap());
    // The registered key is excluded from the next registration, and the
    // same authenticator cannot be registered twice.
    let (options, state) = f.start_passkey_registration("alice").await.unwrap();
    let excluded = options["publicKey"]["excludeCredentials"]
        .as_array()
        .unwrap();
    assert_eq!(excluded.len(), 1);
    assert!(f
        .finish_passkey_registration("alice", &state, &key.register(&options, 0), "again")
        .await
        .is_err());
    // A platform passkey is "swk".
    let phone = SoftKey::new(ORIGIN, RP_ID, "platform");
    let platform = f
        .finish_passkey_registration("alice", &state, &phone.register(&options, 0), "phone")
        .await
        .unwrap();
    assert_eq!(platform.kind, FactorKind::Passkey { hardware: false });

    assert_eq!(
        login(&f, 1, &key).await.unwrap(),
        Verified::Passkey {
            factor: info.id.clone(),
            hardware: true
        }
    );
    assert_eq!(
        f.get("alice", &info.id).await.unwrap().last_used_at,
        Some(T0 + 60)
    );
    assert!(login(&f, 5, &key).await.is_ok());
    // Counter not grown: a clone. Refused, and the stored counter stays 5.
    assert!(matches!(
        login(&f, 5, &key).await,
        Err(MfaError::ClonedCredential)
    ));
    assert!(matches!(
        login(&f, 3, &key).await,
        Err(MfaError::ClonedCredential)
    ));
    assert!(login(&f, 6, &key).await.is_ok());
    // Two ceremonies started with counter 6 stored, both answered with 7
    // (a clone racing the original): webauthn-rs passes both against the
    // started state; the store lets only one through.
    let (o1, s1) = f
        .start_passkey_authentication("alice")
        .await
        .unwrap()
        .unwrap();
    let (o2, s2) = f
        .start_passkey_authentication("alice")
        .await
        .unwrap()
        .unwrap();
    assert!(f
        .finish_passkey_authentication("alice", &s1, &key.assert(&o1, 7))
        .await
        .is_ok());
    assert!(matches!(
        f.finish_passkey_authentication("alice", &s2, &key.assert(&o2, 7))
            .await,
        Err(MfaError::ClonedCredential)
    ));
    // Platform passkeys that always send 0 are not clones.
    for _ in 0..2 {
        assert_eq!(
            login(&f, 0, &phone).await.unwrap(),
            Verified::Passkey {
                factor: platform.id.clone(),
                hardware: false
            }
        );
    }
    // An assertion for another origin, or replayed against a new challenge, fails.
    let (o, s) = f
        .start_passkey_authentication("alice")
        .await
        .unwrap()
        .unwrap();
    let evil = key.at_origin("https://evil.example");
    assert!(f
        .finish_passkey_authentication("alice", &s, &evil.assert(&o, 52))
        .await
        .is_err());
    let (o3, s3) = f
        .start_passkey_authentication("alice")
        .await
        .unwrap()
        .unwrap();
    let stale = key.assert(&o, 50);
    assert!(f
        .finish_passkey_authentication("alice", &s3, &stale)
        .await
        .is_err());
    assert!(f
        .finish_passkey_authentication("alice", &s3, &key.assert(&o3, 51))
        .await
        .is_ok());
    // Garbage and oversized answers are errors.
    let (_, s) = f
        .start_passkey_authentication("alice")
        .await
        .unwrap()
        .unwrap();
    for garbage in [
        serde_json::json!(null),
        serde_json::json!({"id": "x"}),
        serde_json::json!({"id": "a".repeat(70_000), "rawId": "", "type": "public-key", "response": {}}),
    ] {
        assert!(f
            .finish_passkey_authentication("alice", &s, &garbage)
            .await
            .is_err());
    }
    // Removed between the two requests: not found.
    let (o, s) = f
        .start_passkey_authentication("alice")
        .await
        .unwrap()
        .unwrap();
    assert!(f.remove("alice", &info.id).await.unwrap());
    assert!(f
        .finish_passkey_authentication("alice", &s, &key.assert(&o, 60))
        .await
        .is_err());
    assert_eq!(f.reset("alice").await.unwrap(), 1);
    assert!(f
        .start_passkey_authentication("alice")
        .await
        .unwrap()
        .is_none());
    f.close().await;
}

/// The second step's state: sealed for its user; an enrolment offered
/// before the user had a factor is void once they have one.
async fn second_step(b: &Backend) {
    let (f, _) = open(b, "second_step").await;
    let (view, state) = f.prepare_step("erin", &[]).await.unwrap();
    let (uri, _) = view.enrol.expect("erin has no factor: enrolment");
    assert_eq!(view.recovery_codes.len(), 10);
    let secret = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap()
        .to_owned();
    let text = String::from_utf8_lossy(&state);
    assert!(!text.contains(&secret), "the offered secret is sealed");
    assert!(!text.contains(&view.recovery_codes[0]), "so are the codes");
    // Opened only for its user.
    assert!(f.open_state("mallory", &state).is_empty());
    assert!(!f.open_state("erin", &state).is_empty());
    // Erin enrols elsewhere (another tab); the old offer is then refused,
    // and her codes are not replaced.
    let (_, other) = enrol(&f, "erin").await;
    f.save_recovery_codes("erin", &f.new_recovery_codes("erin").hashes)
        .await
        .unwrap();
    let now = T0 + 120;
    let proof =
        castellan_mfa::Proof::from_fields(Some(&totp_code_at(&secret, now).unwrap()), None, None)
            .unwrap();
    assert_eq!(
        f.check_step("erin", &state, &proof, now).await.unwrap(),
        None
    );
    assert_eq!(f.list("erin").await.unwrap().factors.len(), 1);
    assert!(
        f.verify_otp("erin", &view.recovery_codes[0], now)
            .await
            .is_err(),
        "the offered codes were never saved"
    );
    // Her own app still passes the step.
    let (view, state) = f.prepare_step("erin", &[]).await.unwrap();
    assert!(view.enrol.is_none());
    let code = totp_code_at(&other, now).unwrap();
    let proof = castellan_mfa::Proof::from_fields(Some(&code), None, None).unwrap();
    assert!(matches!(
        f.check_step("erin", &state, &proof, now).await.unwrap(),
        Some(Verified::Totp { .. })
    ));
    f.close().await;
}

/// Consent decisions: per user, service and attribute set, until expiry;
/// a new decision replaces the old; forgetting drops it.
async fn consents(b: &Backend) {
    let (f, _) = open(b, "consents").await;
    let day = std::time::Duration::from_secs(86_400);
    assert!(!f.consent_given("alice", "wiki", "d1", T0).await.unwrap());
    f.remember_consent("alice", "wiki", "d1", day, T0)
        .await
        .unwrap();
    assert!(f.consent_given("alice", "wiki", "d1", T0).await.unwrap());
    assert!(f
        .consent_given("alice", "wiki", "d1", T0 + 86_399)
        .await
        .unwrap());
    assert!(
        !f.consent_given("alice", "wiki", "d1", T0 + 86_400)
            .await
            .unwrap(),
        "expired after its ttl"
    );
    assert!(
        !f.consent_given("alice", "wiki", "d2", T0).await.unwrap(),
        "another attribute set asks again"
    );
    assert!(!f.consent_given("bob", "wiki", "d1", T0).await.unwrap());
    assert!(!f.consent_given("alice", "mail", "d1", T0).await.unwrap());
    // A new decision replaces the earlier one for the service.
    f.remember_consent("alice", "wiki", "d2", day, T0 + 10)
        .await
        .unwrap();
    assert!(f
        .consent_given("alice", "wiki", "d2", T0 + 10)
        .await
        .unwrap());
    assert!(!f
        .consent_given("alice", "wiki", "d1", T0 + 10)
        .await
        .unwrap());
    f.remember_consent("alice", "mail", "d1", day, T0)
        .await
        .unwrap();
    f.forget_consent("alice", "wiki", T0 + 20).await.unwrap();
    assert!(!f
        .consent_given("alice", "wiki", "d2", T0 + 20)
        .await
        .unwrap());
    assert!(
        f.consent_given("alice", "mail", "d1", T0 + 20)
            .await
            .unwrap(),
        "only that service's decision is dropped"
    );
    // Keys PostgreSQL text cannot hold are refused, not an error of the store.
    assert!(f
        .remember_consent("a\0b", "wiki", "d1", day, T0)
        .await
        .is_err());
    assert!(!f.consent_given("a\0b", "wiki", "d1", T0).await.unwrap());
    f.close().await;
}

async fn suite(b: Backend) {
    consents(&b).await;
    enrol_and_verify(&b).await;
    second_step(&b).await;
    skew(&b).await;
    replay(&b).await;
    other_users_code(&b).await;
    recovery_codes(&b).await;
    enrol_with_recovery_in_one_step(&b).await;
    remove_and_reset(&b).await;
    secrets_sealed_at_rest(&b).await;
    key_mismatch(&b).await;
    concurrent_verification(&b).await;
    input_limits(&b).await;
    passkeys(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store() {
    suite(Backend::Sqlite(tempfile::tempdir().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store() {
    if let Some(why) = support::postgres::unavailable() {
        eprintln!("SKIPPED postgres_store: {why}");
        return;
    }
    let pg = tokio::task::spawn_blocking(support::postgres::Postgres::start)
        .await
        .unwrap();
    suite(Backend::Postgres(pg)).await;
}

/// The key file: generated on the first open, used by the next.
#[tokio::test]
async fn key_file_is_shared_by_later_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mfa.key");
    let s = |key: KeySource| MfaSettings {
        key,
        ..settings(
            StoreLocation::Sqlite {
                path: dir.path().join("mfa.sqlite"),
            },
            [0; 32],
        )
    };
    let f = Factors::open(s(KeySource::File(path.clone())))
        .await
        .unwrap();
    enrol(&f, "alice").await;
    f.close().await;
    assert!(path.exists());
    let f = Factors::open(s(KeySource::File(path.clone())))
        .await
        .unwrap();
    assert!(f.has_factor("alice").await.unwrap());
    f.close().await;
    // Another node's (missing) key file makes a new key: refused.
    let other = dir.path().join("other.key");
    match Factors::open(s(KeySource::File(other.clone()))).await {
        Err(MfaError::KeyMismatch(m)) => {
            assert!(
                m.contains(&other.display().to_string()) && m.contains("copy"),
                "{m}"
            )
        }
        r => panic!("opened with another key file: {r:?}"),
    }
}
