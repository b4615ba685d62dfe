//! Replays every committed fuzz input as an ordinary test, without
//! cargo-fuzz or libFuzzer: for each target, every file in `seeds/TARGET/`
//! and `regressions/TARGET/` goes through the same check the fuzz target runs
//! (`castellan_fuzz::targets::TARGET::run`).
//!
//!     cargo test --release --no-default-features --manifest-path fuzz/Cargo.toml
//!
//! A failing input is reported by its path and the check's panic message; all
//! inputs run, so one report lists every failure.

use castellan_fuzz::targets::{Check, ALL};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files in `dir` (none when it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n != "README.md" && n != ".gitkeep")
        })
        .collect();
    out.sort();
    out
}

fn message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".to_owned()
    }
}

/// Runs `check` over every input of `target`; returns how many ran and the
/// failures as "path: message".
fn replay(target: &str, check: Check) -> (usize, Vec<String>) {
    let mut inputs = files(&root().join("seeds").join(target));
    inputs.extend(files(&root().join("regressions").join(target)));
    let mut failures = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let shown = path.strip_prefix(root()).unwrap_or(path);
            failures.push(format!("{}: {}", shown.display(), message(&*panic)));
        }
    }
    (inputs.len(), failures)
}

fn replay_target(name: &str) {
    let (_, check) = ALL
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name} in castellan_fuzz::targets::ALL"));
    let (count, failures) = replay(name, *check);
    // An empty or misnamed seed directory must not pass silently.
    assert!(
        count > 0,
        "no inputs for {name} in seeds/{name}/ or regressions/{name}/"
    );
    assert!(
        failures.is_empty(),
        "{} of {count} inputs of {name} fail its check:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{name}: {count} inputs pass");
}

#[test]
fn saml_validate_body() {
    replay_target("saml_validate_body");
}

#[test]
fn service_url() {
    replay_target("service_url");
}

#[test]
fn response_xml() {
    replay_target("response_xml");
}

#[test]
fn oidc_request() {
    replay_target("oidc_request");
}

#[test]
fn saml_request() {
    replay_target("saml_request");
}

#[test]
fn dpop_proof() {
    replay_target("dpop_proof");
}

#[test]
fn client_assertion() {
    replay_target("client_assertion");
}

/// Every target has a test above, and every directory under `seeds/` and
/// `regressions/` belongs to a target (a typo would never be replayed).
#[test]
fn every_target_and_directory_is_replayed() {
    let tested = [
        "saml_validate_body",
        "service_url",
        "response_xml",
        "oidc_request",
        "saml_request",
        "dpop_proof",
        "client_assertion",
    ];
    let mut names: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    let mut sorted = tested;
    sorted.sort_unstable();
    assert_eq!(
        names, sorted,
        "targets::ALL and the tests in tests/corpus.rs differ"
    );
    for dir in ["seeds", "regressions"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("the directory exists") {
            let path = entry.expect("a readable directory entry").path();
            if path.is_dir() {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                assert!(
                    names.contains(&name),
                    "{dir}/{name}/ is no target's directory"
                );
            }
        }
    }
}

/// The `[[bin]]` fuzz targets in Cargo.toml and the targets `run.sh` fuzzes
/// are exactly the replayed ones.
#[test]
fn cargo_toml_and_run_sh_name_the_same_targets() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "castellan-fuzz" && *n != "castellan_fuzz")
        .collect();
    bins.sort_unstable();
    let mut names: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    assert_eq!(bins, names, "fuzz/Cargo.toml [[bin]]s");
    let script = std::fs::read_to_string(root().join("run.sh")).expect("fuzz/run.sh");
    let all = script
        .lines()
        .find_map(|l| l.strip_prefix("all=(")?.strip_suffix(')'))
        .expect("an all=(...) line in run.sh");
    let mut fuzzed: Vec<&str> = all.split_whitespace().collect();
    fuzzed.sort_unstable();
    assert_eq!(fuzzed, names, "fuzz/run.sh all=(...)");
}
