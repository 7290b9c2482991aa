//! Convergence under faults, a seeded random scenario in the style of yrs's `run_scenario`:
//! several quire-clients (each through its own fault proxy) edit several documents with random
//! inserts and deletes while their connections are reset, stalled and resumed, and cut in the
//! middle of a frame, and the server is killed with SIGKILL in the middle and restarted. At the
//! end every client holds the same text for each document, and that text is what the server
//! reloads from SQLite (`quire-server export` after a final kill -9) and serves to a new
//! client once restarted.
//!
//! The seed is printed; replay a run with `QUIRE_SEED=<seed>`: the plan (who edits which
//! document, which fault strikes whom, when the server dies) replays exactly, while network
//! timing still decides how concurrent edits interleave. `QUIRE_SOAK_OPS=<n>` makes it a
//! soak (the default, 2,000 operations, takes ~10–20 s).

use std::sync::Arc;
use std::time::Duration;

use quire_client::{Access, Client, DocHandle, MemoryStore, CONTENT};
use quire_protocol::BackoffPolicy;
use quire_tests::client_util::{config, config_at, until_connected, until_saved, until_text};
use quire_tests::proxy::{Direction, Proxy};
use quire_tests::seeded_rng::{env_count, SeededRng};
use quire_tests::server_process::ServerProcess;
use quire_tests::wait;
use yrs::{Text, Transact};

const CLIENTS: usize = 4;
const DOCS: usize = 3;
/// Operations in the default run; `QUIRE_SOAK_OPS` overrides.
const DEFAULT_OPS: usize = 2000;
/// Room for a restart, reconnect backoffs and a heartbeat timeout on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);
/// A stalled path must be noticed by the heartbeat, not wait for TCP.
const SHORT_HEARTBEAT: &[&str] = &[
    "--heartbeat-interval-ms",
    "300",
    "--heartbeat-timeout-ms",
    "1500",
    // Frequent compaction: snapshots are rewritten while updates arrive.
    "--compact-after-updates",
    "20",
];
/// Fast retries so the run spends its time on faults, not on backoff waits.
const FAST_BACKOFF: BackoffPolicy = BackoffPolicy {
    base: Duration::from_millis(50),
    factor: 2,
    cap: Duration::from_millis(400),
    soon: Duration::from_millis(100),
    stable_after: Duration::from_secs(1),
};

/// One client, its proxy, and its replica of each document.
struct Replica {
    client: Client,
    proxy: Proxy,
    docs: Vec<DocHandle>,
    /// The step at which a stall on this client's path is lifted.
    stalled_until: Option<usize>,
}

/// What the run did, for the log line.
#[derive(Debug, Default)]
struct Tally {
    inserts: usize,
    deletes: usize,
    resets: usize,
    stalls: usize,
    cuts: usize,
    edits_while_down: usize,
}

fn doc_name(d: usize) -> String {
    format!("converge/{d}")
}

/// One random edit: an insert of a short word, or (a third of the time) a short deletion.
/// It draws the same random numbers whatever the text's length (positions are taken modulo
/// it), so a seed replays the same plan even though network timing changes the text.
fn random_edit(rng: &mut SeededRng, doc: &DocHandle, tally: &mut Tally) {
    let delete = rng.percent(33);
    let position = rng.next_u64();
    let count = 1 + rng.below(8) as u32;
    let word = rng.word(6);
    let text = doc.doc().get_or_insert_text(CONTENT);
    let mut txn = doc.doc().transact_mut();
    let len = text.len(&txn);
    if delete && len > 0 {
        let at = (position % u64::from(len)) as u32;
        text.remove_range(&mut txn, at, count.min(len - at));
        tally.deletes += 1;
    } else {
        let at = (position % (u64::from(len) + 1)) as u32;
        text.insert(&mut txn, at, &word);
        tally.inserts += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_edits_under_faults_and_a_crash_converge_on_the_stored_state() {
    let mut rng = SeededRng::from_env("convergence");
    let ops = env_count("QUIRE_SOAK_OPS", DEFAULT_OPS);
    let mut server = ServerProcess::start(SHORT_HEARTBEAT);
    let token = server.token(&["converge/*"], true, "1h");

    let mut replicas = Vec::new();
    for _ in 0..CLIENTS {
        let proxy = Proxy::start(server.addr).await;
        let mut config = config_at(&server, proxy.url(), Some(token.clone()));
        config.backoff = FAST_BACKOFF;
        let client = Client::start(config, Arc::new(MemoryStore::default()));
        let mut docs = Vec::new();
        for d in 0..DOCS {
            docs.push(client.open(&doc_name(d), Access::Write).await.unwrap());
        }
        replicas.push(Replica {
            client,
            proxy,
            docs,
            stalled_until: None,
        });
    }

    // The crash: killed at the middle step, restarted a few steps later (edits go on offline).
    let kill_at = ops / 2;
    let restart_at = kill_at + 1 + rng.index(20);
    let mut tally = Tally::default();
    for step in 0..ops {
        if step == kill_at {
            server.kill9();
        }
        if step == restart_at {
            server.restart();
        }
        for replica in replicas.iter_mut() {
            if replica.stalled_until.is_some_and(|until| step >= until) {
                replica.proxy.resume();
                replica.stalled_until = None;
            }
        }
        let c = rng.index(CLIENTS);
        let replica = &mut replicas[c];
        match rng.below(100) {
            0..=1 => {
                replica.proxy.reset_all();
                tally.resets += 1;
            }
            2 if replica.stalled_until.is_none() => {
                // Silence on the path (new connections too) until a later step.
                replica.proxy.stall();
                replica.stalled_until = Some(step + 5 + rng.index(400));
                tally.stalls += 1;
            }
            3 => {
                let direction = if rng.percent(50) {
                    Direction::ToServer
                } else {
                    Direction::ToClient
                };
                replica.proxy.cut_next_chunk(direction);
                tally.cuts += 1;
            }
            _ => {
                let d = rng.index(DOCS);
                random_edit(&mut rng, &replica.docs[d], &mut tally);
                if (kill_at..restart_at).contains(&step) {
                    tally.edits_while_down += 1;
                }
            }
        }
        // Think time between operations (pacing, not waiting for anything): 0–7 ms.
        let pause = rng.below(8);
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
    let connections: usize = replicas.iter().map(|r| r.proxy.accepted().len()).sum();
    eprintln!("{ops} operations: {tally:?}; {connections} connections through the proxies");

    // Heal the network; every client reconnects and saves every edit.
    for replica in &replicas {
        replica.proxy.resume();
    }
    for (c, replica) in replicas.iter().enumerate() {
        until_connected(&replica.client, DEADLINE).await;
        for doc in &replica.docs {
            until_saved(&replica.client, doc, DEADLINE).await;
        }
        eprintln!("client {c}: every edit saved");
    }
    // Saved on the server is not yet received by every other client: wait for agreement.
    for d in 0..DOCS {
        wait::until(
            &format!("every client to agree on {}", doc_name(d)),
            DEADLINE,
            || {
                let first = replicas[0].docs[d].text();
                let same = replicas.iter().all(|r| r.docs[d].text() == first);
                std::future::ready(same.then_some(()))
            },
        )
        .await;
    }

    // No edit of these correct clients was refused as invalid (counted since the restart).
    assert_eq!(
        server
            .metric("quire_channel_closes_total{code=\"4422\"}")
            .await,
        0.0,
        "the server refused a correct client's update"
    );

    // The server's state as reloaded from SQLite after a crash.
    server.kill9();
    for d in 0..DOCS {
        let name = doc_name(d);
        let output = server.command(&["export", &name]);
        let stored = if output.status.success() {
            String::from_utf8(output.stdout).expect("utf-8 export")
        } else {
            // Never written (possible in a very short run): the clients must hold nothing.
            eprintln!("{name}: {}", String::from_utf8_lossy(&output.stderr).trim());
            String::new()
        };
        let client_text = replicas[0].docs[d].text();
        assert_eq!(
            stored,
            client_text,
            "{name}: the stored state differs from the clients' ({} vs {} bytes)",
            stored.len(),
            client_text.len()
        );
        eprintln!(
            "{name}: {} bytes, identical on {CLIENTS} clients and in SQLite",
            stored.len()
        );
    }

    // And what the restarted server serves from it: a new client, connected directly.
    server.restart();
    let fresh = Client::start(
        config(&server, Some(token)),
        Arc::new(MemoryStore::default()),
    );
    for d in 0..DOCS {
        let expected = replicas[0].docs[d].text();
        let doc = fresh.open(&doc_name(d), Access::Write).await.unwrap();
        until_text(
            &doc,
            &format!("{} served after the restart", doc_name(d)),
            DEADLINE,
            |text| text == expected,
        )
        .await;
    }
}
