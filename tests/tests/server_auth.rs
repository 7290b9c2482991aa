//! Token rights: who may connect (401), which documents a token opens (4403), read-only
//! tokens (OPENED{Read}, writes refused with 4405), expiry during a connection (4001), tokens
//! not valid yet (nbf, 401) and the rate-limited warning a refused login leaves in the log.

use std::time::{SystemTime, UNIX_EPOCH};

use quire_protocol::{Access, ChannelId};
use quire_tests::doc_peer::Peer;
use quire_tests::http_probe::{self, upgrade_head};
use quire_tests::raw_client::RawClient;
use quire_tests::server_process::ServerProcess;

const CH: ChannelId = ChannelId(1);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[tokio::test]
async fn upgrades_without_a_valid_token_get_401() {
    let server = ServerProcess::start(&[]);
    let good = server.token(&["*"], true, "1h");
    let expired = server.token(&["*"], true, "0s");
    // Same claims, signed by another server's secret.
    let foreign = ServerProcess::start(&[]).token(&["*"], true, "1h");
    // One character of the signature changed (not the last, whose low bits are padding).
    let at = good.rfind('.').expect("three parts") + 5;
    let swapped = if &good[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swapped}{}", &good[..at], &good[at + 1..]);

    let status = |auth: Option<String>, query: &str| {
        let extra: Vec<(&str, String)> = auth.into_iter().map(|a| ("Authorization", a)).collect();
        let extra: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let head = upgrade_head("GET", &format!("/ws{query}"), &[], &extra);
        let (addr, tls) = (server.addr, server.tls());
        async move { http_probe::request(addr, tls, &head).await.status }
    };
    let bearer = |token: &str| Some(format!("Bearer {token}"));
    assert_eq!(status(bearer(&good), "").await, 101, "the control");
    assert_eq!(status(None, "").await, 401, "no token");
    assert_eq!(
        status(Some("Basic dXNlcjpwYXNz".into()), "").await,
        401,
        "not a bearer"
    );
    assert_eq!(status(bearer("garbage"), "").await, 401, "malformed");
    assert_eq!(
        status(bearer(&tampered), "").await,
        401,
        "tampered signature"
    );
    assert_eq!(
        status(bearer(&foreign), "").await,
        401,
        "another server's secret"
    );
    assert_eq!(status(bearer(&expired), "").await, 401, "expired");
    // Browsers pass the token in the query; the header wins when both are present.
    let query = format!("?access_token={good}");
    assert_eq!(status(None, &query).await, 101, "token in the query");
    assert_eq!(
        status(bearer("garbage"), &query).await,
        401,
        "the header wins"
    );
}

#[tokio::test]
async fn a_document_outside_the_token_is_refused_with_4403() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["team/*"], true, "1h");
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    assert_eq!(
        client.open(CH, "secret/plans", Access::Read).await,
        Err(4403)
    );
    assert_eq!(
        client.open(CH, "secret/plans", Access::Write).await,
        Err(4403)
    );
    assert_eq!(
        client.open(CH, "team", Access::Read).await,
        Err(4403),
        "team is not team/*"
    );
    // A refusal frees the ID at once.
    assert_eq!(
        client.open(CH, "team/notes", Access::Write).await,
        Ok(Access::Write)
    );
}

#[tokio::test]
async fn a_read_only_token_gets_read_channels_and_its_writes_are_refused() {
    let mut server = ServerProcess::start(&[]);
    let read_only = server.token(&["shared/*"], false, "1h");
    let writer_token = server.token(&["shared/*"], true, "1h");
    let doc = "shared/doc";
    let mut writer = Peer::connect(&server, Some(&writer_token)).await;
    writer.open_synced(CH, doc).await;
    writer.append(CH, "[by the writer]").await;

    // Asking for write with a read-only token yields a read channel, not a refusal (§6.2).
    let mut viewer = Peer::connect(&server, Some(&read_only)).await;
    assert_eq!(viewer.open(CH, doc, Access::Write).await, Ok(Access::Read));
    viewer
        .pump_until("the writer's text", |p| {
            p.docs[&CH].synced && p.text(CH) == "[by the writer]"
        })
        .await;
    // Live updates reach it too.
    writer.append(CH, "[live]").await;
    viewer
        .pump_until("a live update", |p| p.text(CH).ends_with("[live]"))
        .await;

    // Its write closes the channel with 4405, unacknowledged and unapplied.
    viewer.append(CH, "[by the viewer]").await;
    viewer
        .pump_until("the refusal", |p| p.docs[&CH].closed.is_some())
        .await;
    assert_eq!(viewer.docs[&CH].closed, Some(4405));
    assert_eq!(viewer.docs[&CH].acked, 0);
    let mut reader = Peer::connect(&server, Some(&read_only)).await;
    assert_eq!(reader.open(CH, doc, Access::Read).await, Ok(Access::Read));
    reader.pump_until("sync", |p| p.docs[&CH].synced).await;
    writer.append(CH, "[after]").await;
    reader
        .pump_until("the later edit", |p| p.text(CH).ends_with("[after]"))
        .await;
    assert_eq!(reader.text(CH), "[by the writer][live][after]");
    writer
        .pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;

    server.terminate();
    server.restart();
    let mut fresh = Peer::connect(&server, Some(&read_only)).await;
    fresh.open(CH, doc, Access::Read).await.unwrap();
    fresh.pump_until("sync", |p| p.docs[&CH].synced).await;
    assert_eq!(fresh.text(CH), "[by the writer][live][after]");
}

#[tokio::test]
async fn a_token_that_expires_during_the_connection_closes_it_with_4001() {
    let server = ServerProcess::start(&[]);
    let minted_after = unix_now();
    let token = server.token(&["*"], true, "2s");
    let mut peer = Peer::connect(&server, Some(&token)).await;
    peer.open_synced(CH, "expiring/doc").await;
    peer.append(CH, "written in time").await;
    peer.pump_until("acked", |p| p.docs[&CH].acked == p.docs[&CH].writes)
        .await;
    // Await the close itself (recv fails after its own deadline).
    let code = peer.client.expect_close().await;
    let closed_at = unix_now();
    assert_eq!(code, 4001);
    assert!(
        closed_at >= minted_after + 2,
        "closed at {closed_at}, before the token's expiry (minted after {minted_after}, ttl 2 s)"
    );
    // The expired token no longer upgrades.
    let again = RawClient::connect(&server, Some(&token)).await;
    assert!(again.is_err(), "an expired token was accepted");
}

/// HMAC-SHA-256 (RFC 2104) of `message` under a key of at most one block.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    assert!(key.len() <= 64);
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// A token for every document signed with `server`'s secret, with the given time claims, as
/// a JWT library other than Quire's own minter would make it.
fn token_with_times(server: &ServerProcess, nbf: u64, exp: u64) -> String {
    signed_token(
        server,
        serde_json::json!({
            "sub": "tester", "name": "Tester", "nbf": nbf, "exp": exp,
            "docs": [{ "pattern": "*", "write": true }],
        }),
    )
}

/// A token for an hour with the given grants, signed with `server`'s secret.
fn token_with_grants(server: &ServerProcess, docs: serde_json::Value) -> String {
    signed_token(
        server,
        serde_json::json!({
            "sub": "tester", "name": "Tester", "exp": unix_now() + 3600, "docs": docs,
        }),
    )
}

/// `claims` as an HS256 JWT signed with `server`'s secret.
fn signed_token(server: &ServerProcess, claims: serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    let secret = std::fs::read_to_string(server.data_dir().join("secret.key")).unwrap();
    let key = B64.decode(secret.trim()).unwrap();
    let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = B64.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let signature = B64.encode(hmac_sha256(&key, signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

#[tokio::test]
async fn a_token_before_its_nbf_gets_401_and_the_refusal_is_logged_without_the_token() {
    let server = ServerProcess::start(&[]);
    let now = unix_now();
    let status = |token: String| {
        let head = upgrade_head(
            "GET",
            "/ws",
            &[],
            &[("Authorization", &format!("Bearer {token}"))],
        );
        let (addr, tls) = (server.addr, server.tls());
        async move { http_probe::request(addr, tls, &head).await.status }
    };
    let valid = token_with_times(&server, now - 60, now + 3600);
    assert_eq!(status(valid).await, 101, "nbf in the past: the control");
    let early = token_with_times(&server, now + 3600, now + 7200);
    assert_eq!(status(early.clone()).await, 401, "nbf in the future");

    let line = quire_tests::wait::until(
        "the refusal in the log",
        quire_tests::wait::DEADLINE,
        || {
            let log = server.log();
            let line = log
                .lines()
                .find(|l| l.contains("login refused"))
                .map(str::to_owned);
            std::future::ready(line)
        },
    )
    .await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("not_yet_valid"), "{line}");
    assert!(line.contains("127.0.0.1"), "the peer address: {line}");
    let log = server.log();
    let signature = early.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "the token stays out of the log");
}

#[tokio::test]
async fn a_token_with_no_grants_is_refused_at_the_upgrade_with_403() {
    let server = ServerProcess::start(&[]);
    let token = token_with_grants(&server, serde_json::json!([]));
    let auth = format!("Bearer {token}");
    let head = upgrade_head("GET", "/ws", &[], &[("Authorization", auth.as_str())]);
    let response = http_probe::request(server.addr, server.tls(), &head).await;
    assert_eq!(response.status, 403, "{response:?}");
    // The same token with one grant is upgraded.
    let granted = token_with_grants(
        &server,
        serde_json::json!([{ "pattern": "a", "write": false }]),
    );
    let auth = format!("Bearer {granted}");
    let head = upgrade_head("GET", "/ws", &[], &[("Authorization", auth.as_str())]);
    let response = http_probe::request(server.addr, server.tls(), &head).await;
    assert_eq!(response.status, 101, "{response:?}");
}

#[tokio::test]
async fn grant_patterns_match_byte_for_byte_and_a_star_spans_slashes() {
    let server = ServerProcess::start(&[]);
    let token = token_with_grants(
        &server,
        serde_json::json!([
            { "pattern": "team/*", "write": false },
            { "pattern": "team/drafts/*", "write": true },
            { "pattern": "notes-*-2026", "write": true },
        ]),
    );
    let mut client = RawClient::connect_hello(&server, Some(&token)).await;
    let cases: &[(&str, Result<Access, u16>)] = &[
        ("team/a", Ok(Access::Read)),
        ("team/a/b/c", Ok(Access::Read)),
        ("team/", Ok(Access::Read)),
        ("team/drafts/x", Ok(Access::Write)),
        ("Team/a", Err(4403)),
        ("team", Err(4403)),
        ("notes--2026", Ok(Access::Write)),
        ("notes-a/b-2026", Ok(Access::Write)),
        ("notes-a-2027", Err(4403)),
    ];
    for (n, (doc, expected)) in cases.iter().enumerate() {
        let channel = ChannelId(10 + n as u32);
        let got = client.open(channel, doc, Access::Write).await;
        assert_eq!(&got, expected, "{doc}");
    }
}
