//! WebSocket conformance: the Autobahn test cases (run by `kosoku`, their Python 3 port) against
//! the server's `/echo` endpoint, which runs on the server's real connection stack. Every case
//! must end OK, NON-STRICT or INFORMATIONAL, and each outcome must match the one recorded in
//! `tests/conformance/summary.json`, so a regression in any case fails even when it stays
//! "acceptable".
//!
//! Cases 12.* and 13.* (permessage-deflate) are excluded: the server does not offer compression.
//! `kosoku` cannot speak TLS, so this server serves plain ws:// on loopback.
//!
//! After an intended change of outcome, rewrite the summary with
//! `QUIRE_CONFORMANCE_UPDATE=1 cargo test -p quire-tests --test conformance`, and review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quire_tests::server_process::ServerProcess;

/// The kosoku release the summary was recorded with (scripts/test.sh installs it).
const KOSOKU_VERSION: &str = "0.1.0";
/// Cases left out: compression, which the server does not negotiate.
const EXCLUDED: [&str; 2] = ["12.*", "13.*"];
/// Autobahn's largest messages (9.1.6, 9.2.6) are 16 MiB; the echo route must take them whole.
const MAX_MESSAGE: &str = "16777216";
/// Generous: the run takes ~10 s on a loaded 2-core machine with a debug server.
const RUN_DEADLINE: Duration = Duration::from_secs(600);
/// The verdicts that count as conforming.
const ACCEPTABLE: [&str; 3] = ["OK", "NON-STRICT", "INFORMATIONAL"];

/// One case's verdict: the message exchange and the closing handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    behavior: String,
    behavior_close: String,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (close {})", self.behavior, self.behavior_close)
    }
}

fn summary_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/summary.json")
}

/// Autobahn case ids ("9.1.10") in numeric order.
fn case_key(id: &str) -> Vec<u32> {
    id.split('.')
        .map(|n| n.parse().unwrap_or(u32::MAX))
        .collect()
}

fn kosoku_version() -> Option<String> {
    let output = Command::new("python3")
        .args(["-m", "pip", "show", "kosoku"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix("Version: "))
        .map(|v| v.trim().to_owned())
}

/// Runs kosoku against `url`, writing its report to `outdir`; panics if it cannot run.
fn run_kosoku(url: &str, outdir: &Path) {
    let mut command = Command::new("kosoku");
    command.args(["-p", "2"]);
    for pattern in EXCLUDED {
        command.args(["-x", pattern]);
    }
    command.arg("-o").arg(outdir).arg(url);
    let log = std::fs::File::create(outdir.with_extension("log")).expect("kosoku log file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run kosoku ({err}): install it with `python3 -m pip install \
                 kosoku=={KOSOKU_VERSION}` (scripts/test.sh does)"
            )
        });
    // kosoku exits 1 when a case is not OK; the report is what we judge, so only a missing
    // report is an error here. Poll with a deadline rather than block forever.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling kosoku") {
            break status;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            panic!("kosoku still running after {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("kosoku finished with {status} in {:.1?}", started.elapsed());
}

/// The verdict of every case in kosoku's `index.json` (one agent: the server under test).
fn read_report(outdir: &Path) -> BTreeMap<String, Outcome> {
    let path = outdir.join("index.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        let log = std::fs::read_to_string(outdir.with_extension("log")).unwrap_or_default();
        panic!(
            "no kosoku report at {} ({err}); kosoku said:\n{log}",
            path.display()
        )
    });
    let index: serde_json::Value = serde_json::from_str(&text).expect("index.json is JSON");
    let agents = index.as_object().expect("index.json maps agents");
    assert_eq!(agents.len(), 1, "one agent expected: {:?}", agents.keys());
    let cases = agents.values().next().unwrap().as_object().expect("cases");
    cases
        .iter()
        .map(|(id, case)| {
            let field = |name: &str| case[name].as_str().unwrap_or("?").to_owned();
            let outcome = Outcome {
                behavior: field("behavior"),
                behavior_close: field("behaviorClose"),
            };
            (id.clone(), outcome)
        })
        .collect()
}

fn read_summary() -> BTreeMap<String, Outcome> {
    let path = summary_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let summary: serde_json::Value = serde_json::from_str(&text).expect("summary is JSON");
    summary["cases"]
        .as_object()
        .expect("summary.cases")
        .iter()
        .map(|(id, case)| {
            let field = |name: &str| case[name].as_str().expect("verdict string").to_owned();
            let outcome = Outcome {
                behavior: field("behavior"),
                behavior_close: field("behaviorClose"),
            };
            (id.clone(), outcome)
        })
        .collect()
}

/// Writes the summary by hand so cases stay in numeric order, one per line.
fn write_summary(results: &BTreeMap<String, Outcome>) {
    let mut ids: Vec<&String> = results.keys().collect();
    ids.sort_by_key(|id| case_key(id));
    let lines: Vec<String> = ids
        .iter()
        .map(|id| {
            let o = &results[*id];
            format!(
                "    \"{id}\": {{\"behavior\": \"{}\", \"behaviorClose\": \"{}\"}}",
                o.behavior, o.behavior_close
            )
        })
        .collect();
    let text = format!(
        "{{\n  \"tool\": \"kosoku {KOSOKU_VERSION}\",\n  \"excluded\": {},\n  \"counts\": {},\n  \
         \"cases\": {{\n{}\n  }}\n}}\n",
        serde_json::to_string(&EXCLUDED).unwrap(),
        serde_json::to_string(&counts(results)).unwrap(),
        lines.join(",\n"),
    );
    std::fs::write(summary_path(), text).expect("writing the summary");
}

fn counts(results: &BTreeMap<String, Outcome>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for outcome in results.values() {
        *counts.entry(outcome.behavior.clone()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn the_echo_endpoint_passes_the_autobahn_cases() {
    match kosoku_version() {
        Some(version) if version == KOSOKU_VERSION => {}
        Some(other) => panic!(
            "kosoku {other} is installed but the summary was recorded with {KOSOKU_VERSION}: \
             `python3 -m pip install kosoku=={KOSOKU_VERSION}`"
        ),
        None => panic!(
            "kosoku is not installed: `python3 -m pip install kosoku=={KOSOKU_VERSION}` \
             (scripts/test.sh installs it)"
        ),
    }
    let server = ServerProcess::start_plain_ws(&[
        "--echo-endpoint",
        "--max-frame-size",
        MAX_MESSAGE,
        "--max-message-size",
        MAX_MESSAGE,
    ]);
    // Kept under target/ so a failing run's per-case HTML reports can be read afterwards.
    let outdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-report");
    let _ = std::fs::remove_dir_all(&outdir);
    run_kosoku(&format!("ws://{}/echo", server.addr), &outdir);
    let results = read_report(&outdir);
    eprintln!(
        "{} cases: {:?}; report in {}",
        results.len(),
        counts(&results),
        outdir.display()
    );

    let mut failures = Vec::new();
    for (id, outcome) in &results {
        if !ACCEPTABLE.contains(&outcome.behavior.as_str()) {
            failures.push(format!("{id}: {outcome} is not conforming"));
        }
    }
    if std::env::var_os("QUIRE_CONFORMANCE_UPDATE").is_some() {
        assert!(
            failures.is_empty(),
            "not recording failures:\n{}",
            failures.join("\n")
        );
        write_summary(&results);
        eprintln!("wrote {}", summary_path().display());
        return;
    }
    let expected = read_summary();
    for (id, want) in &expected {
        match results.get(id) {
            None => failures.push(format!("{id}: did not run (expected {want})")),
            Some(got) if got != want => {
                failures.push(format!("{id}: {got}, expected {want}"));
            }
            Some(_) => {}
        }
    }
    for id in results.keys().filter(|id| !expected.contains_key(*id)) {
        failures.push(format!("{id}: ran but is not in the summary"));
    }
    failures.sort_by_key(|line| case_key(line.split(':').next().unwrap_or_default()));
    failures.dedup();
    assert!(
        failures.is_empty(),
        "{} conformance regressions (per-case reports in {}):\n{}",
        failures.len(),
        outdir.display(),
        failures.join("\n")
    );
}
