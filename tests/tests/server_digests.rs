//! State digests on one server (PROTOCOL §6.10): clients that edited a document together,
//! deletions included, each hold the server's digest when they ask for it; `quire-server
//! verify` finds the server's copy equal to its SQLite file; `/digests` wants a token.

use std::time::Duration;

use quire_client::{Access, Comparison, DocHandle};
use quire_protocol::StateDigest;
use quire_tests::client_util::{append, start_client, until_saved, until_text};
use quire_tests::digests::{compare_settled, until_converged, verify};
use quire_tests::http_probe;
use quire_tests::server_process::ServerProcess;
use yrs::{Text, Transact};

const DEADLINE: Duration = Duration::from_secs(20);
const DOC: &str = "team/digest";

/// Deletes `len` characters at `at` of the document's text.
fn delete(doc: &DocHandle, at: u32, len: u32) {
    let content = doc.doc().get_or_insert_text(quire_client::CONTENT);
    content.remove_range(&mut doc.doc().transact_mut(), at, len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hold_the_servers_digest_and_verify_finds_the_store_equal() {
    let server = ServerProcess::start(&[]);
    let writer_token = server.token(&["team/*"], true, "1h");
    let (alice, bob) = (
        start_client(&server, &writer_token),
        start_client(&server, &writer_token),
    );
    let a = alice.open(DOC, Access::Write).await.unwrap();
    let b = bob.open(DOC, Access::Write).await.unwrap();
    // Concurrent edits and deletions from both sides.
    for n in 0..10 {
        append(&a, &format!("<a{n}>"));
        append(&b, &format!("<b{n}>"));
        if n % 3 == 2 {
            delete(&a, 0, 2);
            delete(&b, 1, 3);
        }
    }
    until_saved(&alice, &a, DEADLINE).await;
    until_saved(&bob, &b, DEADLINE).await;
    let text = a.text();
    until_text(&b, "Alice's edits at Bob's", DEADLINE, |t| t == text).await;
    until_text(&a, "Bob's edits at Alice's", DEADLINE, |t| t == b.text()).await;

    let Comparison::Same(digest) = compare_settled(&a).await else {
        panic!("Alice's replica differs from the server's");
    };
    assert_eq!(compare_settled(&b).await, Comparison::Same(digest));
    assert_eq!(a.digest(), b.digest());

    // A reader may ask too.
    let reader = start_client(&server, &server.token(&["team/*"], false, "1h"));
    let r = reader.open(DOC, Access::Read).await.unwrap();
    until_text(&r, "the reader's replica", DEADLINE, |t| t == text).await;
    assert_eq!(r.server_digest().await.unwrap(), digest);
    assert_eq!(r.digest(), digest);

    // The server's copy against its SQLite file.
    let data_dir = server.data_dir().to_str().unwrap().to_owned();
    let store = ["--data-dir", data_dir.as_str()];
    until_converged(&[&server], &store, None, &[DOC], DEADLINE, || {
        vec![(DOC.to_owned(), digest)]
    })
    .await;
    let verified = verify(&[&server], &store, None, None).await;
    assert!(verified.agreed, "{}", verified.output);
    assert_eq!(
        verified.stored.get(DOC),
        Some(&digest),
        "{}",
        verified.output
    );
    assert!(verified.output.contains("\tsame"), "{}", verified.output);
}

#[tokio::test]
async fn digests_are_only_listed_with_a_token_that_reads_the_document() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["team/*"], true, "1h");
    let client = start_client(&server, &token);
    let doc = client.open(DOC, Access::Write).await.unwrap();
    append(&doc, "hello");
    until_saved(&client, &doc, DEADLINE).await;

    let response = http_probe::get(server.addr, server.tls(), "/digests").await;
    assert_eq!(response.status, 401, "{}", response.body);
    let (addr, tls) = (server.addr, server.tls());
    let list_with = |token: String| {
        let head =
            format!("GET /digests HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}");
        let tls = tls.clone();
        async move { http_probe::request(addr, tls, &head).await }
    };
    let reader = list_with(server.token(&["team/*"], false, "1h")).await;
    assert_eq!(reader.status, 200);
    assert!(
        reader.body.contains(&format!("\"doc\":\"{DOC}\"")),
        "{}",
        reader.body
    );
    let outsider = list_with(server.token(&["other/*"], false, "1h")).await;
    assert_eq!(outsider.status, 200);
    assert_eq!(outsider.body, "", "a token for other documents lists none");

    // Signed with another secret: the node refuses the token, and verify says so and fails.
    let data_dir = server.data_dir().to_str().unwrap().to_owned();
    let store = ["--data-dir", data_dir.as_str()];
    let other_secret = "b3RoZXItc2VjcmV0LW9mLWF0LWxlYXN0LTE2LWJ5dGVz";
    let refused = verify(&[&server], &store, Some(other_secret), None).await;
    assert!(!refused.agreed);
    assert!(
        refused.output.contains("unreachable: answered 401"),
        "{}",
        refused.output
    );

    // `verify DOC` asks the node for that document alone.
    let verified = verify(&[&server], &store, None, Some(DOC)).await;
    assert!(verified.agreed, "{}", verified.output);
    let expected: StateDigest = doc.digest();
    assert_eq!(verified.stored.get(DOC), Some(&expected));
    assert_eq!(
        verified.output.matches("\tsame").count(),
        1,
        "{}",
        verified.output
    );
}
