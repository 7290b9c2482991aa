//! Every copy of a document holds the same state (PROTOCOL §6.10): the store's, every node's
//! and every client replica's. `quire-server verify` compares the nodes with the store; the
//! replicas' digests are compared with the store's digest that it prints.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quire_client::{Comparison, DocHandle};
use quire_protocol::StateDigest;

use crate::server_process::{server_binary, ServerProcess};

/// What one run of `quire-server verify` found.
#[derive(Debug)]
pub struct Verified {
    /// Exit status 0: every node holding a document holds the store's digest.
    pub agreed: bool,
    /// The store's digest of each document listed.
    pub stored: BTreeMap<String, StateDigest>,
    /// The `DOC NODE HEAD DIGEST VERDICT` lines, for failure messages.
    pub output: String,
}

/// Runs `quire-server verify [doc]` on `nodes` against the store named by `store_args`
/// (`--database-url URL`, or `--data-dir DIR`), signing its token with `secret` if given
/// (otherwise the data directory's). Nodes behind the store get 10 s to catch up.
pub async fn verify(
    nodes: &[&ServerProcess],
    store_args: &[&str],
    secret: Option<&str>,
    doc: Option<&str>,
) -> Verified {
    let mut command = tokio::process::Command::new(server_binary());
    command.arg("verify").args(doc).args(store_args);
    command.args(["--settle", "10s"]);
    if let Some(secret) = secret {
        command.args(["--secret", secret]);
    }
    for node in nodes {
        let (url, cert) = node.http_base();
        command.args(["--node", &url]);
        if let Some(cert) = cert {
            command.arg("--ca-cert").arg(cert);
        }
    }
    let output = command.output().await.expect("running quire-server verify");
    let text = String::from_utf8(output.stdout).expect("UTF-8 output");
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "verify failed to run: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields[..] {
                [doc, "stored", _head, digest] => Some((
                    doc.to_owned(),
                    StateDigest::from_hex(digest).expect("a digest"),
                )),
                _ => None,
            }
        })
        .collect();
    Verified {
        agreed: output.status.success(),
        stored,
        output: text,
    }
}

/// Waits until `verify` finds every node in `nodes` holding the store's digest of each of
/// `docs`, and every replica `replicas` lists (document, current digest) holds it too; fails
/// after `deadline` with what differed.
pub async fn until_converged<F>(
    nodes: &[&ServerProcess],
    store_args: &[&str],
    secret: Option<&str>,
    docs: &[&str],
    deadline: Duration,
    mut replicas: F,
) where
    F: FnMut() -> Vec<(String, StateDigest)>,
{
    let until = Instant::now() + deadline;
    loop {
        let mut problems = Vec::new();
        let mut outputs = String::new();
        for doc in docs {
            let verified = verify(nodes, store_args, secret, Some(doc)).await;
            if !verified.agreed {
                problems.push(format!("verify {doc} found a difference"));
            }
            // Every node compared, not passed over for not holding the document (yet).
            if verified.output.matches("\tsame").count() < nodes.len() {
                problems.push(format!("not every node holds {doc} yet"));
            }
            outputs.push_str(&verified.output);
            let stored = verified.stored.get(*doc).copied();
            for (replica_doc, digest) in replicas() {
                if replica_doc == *doc && Some(digest) != stored {
                    problems.push(format!(
                        "a replica of {doc} holds {digest}, the store {stored:?}"
                    ));
                }
            }
        }
        if problems.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "copies still differ after {deadline:?}: {problems:?}\n{outputs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The replica's comparison with its server's copy, asked again while an edit made meanwhile
/// spoils it (at most ten times: nothing should be editing the replica then).
pub async fn compare_settled(doc: &DocHandle) -> Comparison {
    for _ in 0..10 {
        match doc.compare_with_server().await.expect("asking the digest") {
            Comparison::EditedMeanwhile => continue,
            answer => return answer,
        }
    }
    panic!("edited meanwhile, ten times in a row");
}
