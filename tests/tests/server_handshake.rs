//! Refused upgrades: each malformed or unauthorised handshake gets the HTTP status
//! docs/PROTOCOL.md §2.3 names, as a real response rather than a dropped socket; and TCP
//! connections past an address's limit are closed at accept.

use quire_tests::http_probe::{self, upgrade_head};
use quire_tests::server_process::ServerProcess;

/// Sends `head` and returns the response.
async fn probe(server: &ServerProcess, head: &str) -> http_probe::Response {
    http_probe::request(server.addr, server.tls(), head).await
}

#[tokio::test]
async fn malformed_upgrades_get_the_documented_status() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let auth = format!("Bearer {token}");
    let with_token = [("Authorization", auth.as_str())];

    // The control: the same request, well formed, is upgraded.
    let ok = probe(&server, &upgrade_head("GET", "/ws", &[], &with_token)).await;
    assert_eq!(ok.status, 101, "{ok:?}");
    assert_eq!(ok.header("Sec-WebSocket-Protocol"), Some("quire.v1"));

    let cases: &[(&str, String, u16)] = &[
        (
            "no subprotocol",
            upgrade_head("GET", "/ws", &["Sec-WebSocket-Protocol"], &with_token),
            400,
        ),
        (
            "another subprotocol only",
            upgrade_head(
                "GET",
                "/ws",
                &["Sec-WebSocket-Protocol"],
                &[("Sec-WebSocket-Protocol", "quire.v2"), with_token[0]],
            ),
            400,
        ),
        (
            "no key",
            upgrade_head("GET", "/ws", &["Sec-WebSocket-Key"], &with_token),
            400,
        ),
        (
            "malformed key",
            upgrade_head(
                "GET",
                "/ws",
                &["Sec-WebSocket-Key"],
                &[("Sec-WebSocket-Key", "short"), with_token[0]],
            ),
            400,
        ),
        (
            "no Upgrade header",
            upgrade_head("GET", "/ws", &["Upgrade"], &with_token),
            400,
        ),
        (
            "HTTP/1.0",
            upgrade_head("GET", "/ws", &[], &with_token).replacen(" HTTP/1.1", " HTTP/1.0", 1),
            400,
        ),
        (
            "no Host header",
            upgrade_head("GET", "/ws", &["Host"], &with_token),
            400,
        ),
        (
            "not a GET",
            upgrade_head("POST", "/ws", &[], &with_token),
            405,
        ),
        (
            "unknown path",
            upgrade_head("GET", "/socket", &[], &with_token),
            404,
        ),
    ];
    for (what, head, status) in cases {
        let response = probe(&server, head).await;
        assert_eq!(response.status, *status, "{what}: {response:?}");
        assert!(
            !response.body.is_empty(),
            "{what}: a refusal explains itself"
        );
    }
}

#[tokio::test]
async fn a_wrong_or_missing_websocket_version_gets_426_naming_13() {
    let server = ServerProcess::start(&[]);
    let token = server.token(&["*"], true, "1h");
    let auth = format!("Bearer {token}");
    for (what, extra) in [
        ("missing", vec![]),
        ("8", vec![("Sec-WebSocket-Version", "8")]),
        (
            "repeated",
            vec![
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Version", "13"),
            ],
        ),
    ] {
        let mut extra = extra;
        extra.push(("Authorization", auth.as_str()));
        let head = upgrade_head("GET", "/ws", &["Sec-WebSocket-Version"], &extra);
        let response = probe(&server, &head).await;
        assert_eq!(response.status, 426, "version {what}: {response:?}");
        assert_eq!(
            response.header("Sec-WebSocket-Version"),
            Some("13"),
            "version {what}"
        );
    }
}

#[tokio::test]
async fn refused_upgrades_are_counted_and_the_server_carries_on() {
    let server = ServerProcess::start(&[]);
    let before = server.metric("quire_refused_upgrades_total").await;
    let response = probe(
        &server,
        &upgrade_head("GET", "/ws", &["Sec-WebSocket-Key"], &[]),
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(
        server.metric("quire_refused_upgrades_total").await,
        before + 1.0
    );
    let health = http_probe::get(server.addr, server.tls(), "/healthz").await;
    assert_eq!((health.status, health.body.trim()), (200, "ok"));
}

/// Whether a new connection to `server` gets through a TLS handshake (one refused at accept
/// is closed before it).
async fn tls_handshake_succeeds(server: &ServerProcess) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(server.addr).await else {
        return false;
    };
    let connector = tokio_rustls::TlsConnector::from(server.tls());
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let handshake = tokio::time::timeout(
        quire_tests::raw_client::RECV_TIMEOUT,
        connector.connect(name, tcp),
    );
    matches!(handshake.await, Ok(Ok(_)))
}

#[tokio::test]
async fn tcp_connections_per_address_are_counted_from_accept() {
    let server = ServerProcess::start(&[
        "--max-connections-per-ip",
        "1",
        "--max-tcp-connections-per-ip",
        "2",
    ]);
    let token = server.token(&["*"], true, "1h");
    // One WebSocket and one socket that never says anything hold both places.
    let _peer = quire_tests::doc_peer::Peer::connect(&server, Some(&token)).await;
    let idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // A third connection is closed at accept, before TLS; polled only to let the server
    // accept the idle socket first.
    quire_tests::wait::until(
        "a third connection to be refused",
        quire_tests::wait::DEADLINE,
        || async { (!tls_handshake_succeeds(&server).await).then_some(()) },
    )
    .await;
    // The idle socket lets go of its place when it closes; a new connection then gets in.
    drop(idle);
    quire_tests::wait::until(
        "a place to free up",
        quire_tests::wait::DEADLINE,
        || async { tls_handshake_succeeds(&server).await.then_some(()) },
    )
    .await;
}

/// Behind a trusted proxy (`--trusted-proxy`), connections count against the address the proxy
/// names in `X-Forwarded-For` (its rightmost untrusted hop), not against the proxy; from any
/// other address the header is ignored.
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    use quire_tests::raw_client::RawClient;
    use tokio_tungstenite::tungstenite::Error;

    let refused_with_429 = |result: Result<RawClient, Error>| matches!(result, Err(Error::Http(response)) if response.status() == 429);
    let behind = ServerProcess::start(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxy",
        "127.0.0.1,10.0.0.0/8",
    ]);
    let token = behind.token(&["*"], true, "1h");
    let _ada = RawClient::connect_forwarded(&behind, Some(&token), "203.0.113.7")
        .await
        .expect("a first client");
    // A forged hop on the left, the client, then an inner proxy on the right.
    let _bob =
        RawClient::connect_forwarded(&behind, Some(&token), "1.2.3.4, 198.51.100.2, 10.0.0.5")
            .await
            .expect("another client");
    let again = RawClient::connect_forwarded(&behind, Some(&token), "203.0.113.7").await;
    assert!(
        refused_with_429(again),
        "the first client's second connection"
    );
    let forged = RawClient::connect_forwarded(&behind, Some(&token), "5.6.7.8, 198.51.100.2").await;
    assert!(
        refused_with_429(forged),
        "the second client, whatever it forges on the left"
    );

    // Without --trusted-proxy the header counts for nothing: both are 127.0.0.1.
    let direct = ServerProcess::start(&["--max-connections-per-ip", "1"]);
    let token = direct.token(&["*"], true, "1h");
    let _one = RawClient::connect_forwarded(&direct, Some(&token), "203.0.113.7")
        .await
        .expect("a first connection");
    let other = RawClient::connect_forwarded(&direct, Some(&token), "198.51.100.2").await;
    assert!(refused_with_429(other));
}
