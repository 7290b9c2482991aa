//! Divergence detection between servers sharing PostgreSQL (docs/SCALING.md): clients editing
//! one document through two nodes end with the same state digest as both nodes and the
//! database (`quire-server verify`, each client's `DIGEST` request), and the nodes' own
//! comparisons of quiet documents find nothing. An update deleted from the database behind
//! the cluster's back is then found: by `verify`, and by the nodes, which count it in
//! `quire_digest_mismatches_total` and store the lost content again.

use std::time::Duration;

use quire_client::{Access, Comparison, DocHandle};
use quire_tests::client_util::{append, start_client, until_saved, until_text};
use quire_tests::cluster::Backends;
use quire_tests::digests::compare_settled;
use quire_tests::server_process::ServerProcess;
use quire_tests::wait;
use sqlx::Connection;
use yrs::{Text, Transact};

const DEADLINE: Duration = Duration::from_secs(30);
const DOC: &str = "cluster/digest";

async fn same_as_server(doc: &DocHandle) -> bool {
    matches!(compare_settled(doc).await, Comparison::Same(_))
}

async fn until_metric(node: &ServerProcess, name: &str, at_least: f64) {
    wait::until(name, DEADLINE, || async {
        (node.metric(name).await >= at_least).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_clients_and_the_database_agree_and_a_lost_row_is_found_and_restored() {
    let backends = Backends::start("digests").await;
    let flags = backends.flags(&["--shared-poll-ms", "100", "--digest-check-secs", "1"]);
    let one = ServerProcess::start(&flags);
    let two = ServerProcess::start(&flags);
    let token = backends.token();
    let (alice, bob) = (start_client(&one, &token), start_client(&two, &token));
    let a = alice.open(DOC, Access::Write).await.unwrap();
    let b = bob.open(DOC, Access::Write).await.unwrap();
    for n in 0..20 {
        append(&a, &format!("<a{n}>"));
        append(&b, &format!("<b{n}>"));
        if n % 5 == 4 {
            let content = b.doc().get_or_insert_text(quire_client::CONTENT);
            content.remove_range(&mut b.doc().transact_mut(), 0, 4);
        }
    }
    until_saved(&alice, &a, DEADLINE).await;
    until_saved(&bob, &b, DEADLINE).await;
    until_text(&b, "the same text on both nodes' clients", DEADLINE, |t| {
        t == a.text()
    })
    .await;

    let replicas = || vec![(DOC.to_owned(), a.digest()), (DOC.to_owned(), b.digest())];
    backends
        .until_converged(&[&one, &two], &[DOC], DEADLINE, replicas)
        .await;
    assert!(same_as_server(&a).await && same_as_server(&b).await);
    // Each node compared the quiet document with the database, and found it equal.
    for node in [&one, &two] {
        until_metric(node, "quire_digest_checks_total", 1.0).await;
        assert_eq!(node.metric("quire_digest_mismatches_total").await, 0.0);
    }

    // An update lost from the database behind the cluster's back: the nodes still hold it.
    let mut db = sqlx::PgConnection::connect(&backends.database_url)
        .await
        .unwrap();
    let deleted = sqlx::query(
        "DELETE FROM updates WHERE doc_id = $1
         AND seq = (SELECT MAX(seq) FROM updates WHERE doc_id = $1)",
    )
    .bind(DOC)
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(deleted.rows_affected(), 1, "the log holds updates");
    let verified = backends.verify(&[&one, &two], DOC).await;
    assert!(!verified.agreed, "{}", verified.output);
    assert_eq!(
        verified.output.matches("\tDIFFERENT").count(),
        2,
        "{}",
        verified.output
    );
    // The next quiet spell after an edit: the nodes compare again; the first to find the
    // mismatch counts it and stores again what the database lost (the other may then find the
    // database whole). Every copy then agrees, and the database holds the clients' text.
    append(&a, "<after>");
    until_saved(&alice, &a, DEADLINE).await;
    wait::until("a node to find the mismatch", DEADLINE, || async {
        let found = one.metric("quire_digest_mismatches_total").await
            + two.metric("quire_digest_mismatches_total").await;
        (found >= 1.0).then_some(())
    })
    .await;
    backends
        .until_converged(&[&one, &two], &[DOC], DEADLINE, replicas)
        .await;
    assert_eq!(backends.stored_text(DOC), a.text());
}
