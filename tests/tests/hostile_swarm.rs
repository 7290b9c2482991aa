//! 1,000 hostile clients at once against one server, while two honest quire-clients keep
//! editing a document together on the same server.
//!
//! Each hostile client makes a few seeded random attacks from the spec's list of bad inputs
//! and checks the documented answer to each (PROTOCOL.md §2.3, §4.2, §7, §9): malformed
//! upgrades (400), no token (401), a slowloris request head (the connection is dropped), a
//! silent socket (4010), a text message (1003), a malformed frame (1002), fragments beyond
//! the message limit on one channel or summed over many (1009), a decode-bomb update (4422), a write on a read-only channel
//! (4405), data on an unknown channel (4404) and a flood of channel opens (4429).
//!
//! The swarm runs in two waves. Meanwhile the server's resident memory is sampled from /proc:
//! it must stay under a bound derived from the configured limits, and the second wave must not
//! need more than the first (nothing accumulates). The honest pair must keep syncing
//! throughout, every marker arriving exactly once. Replay a run with `QUIRE_SEED`; scale it
//! with `QUIRE_SWARM_CLIENTS` and `QUIRE_SWARM_ROUNDS`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quire_client::{Access, Client, MemoryStore};
use quire_protocol::frame::kind;
use quire_protocol::{ysync, ChannelId};
use quire_tests::client_util::{append, config, occurrences, until_saved, until_text};
use quire_tests::http_probe::{self, upgrade_head};
use quire_tests::raw_client::{connect_tcp, RawClient};
use quire_tests::rss::{rss_kib, RssPeak};
use quire_tests::seeded_rng::{env_count, SeededRng};
use quire_tests::server_process::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const MAX_FRAME: u32 = 64 * 1024;
const MAX_MESSAGE: u32 = 1024 * 1024;
const MAX_CHANNELS: u32 = 16;
/// The hostile clients' addresses, 127.0.0.2 to 127.0.0.9: each stays under the default
/// limit of 256 connections per address.
const SOURCES: u8 = 8;
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Attack {
    MalformedUpgrade,
    NoToken,
    Slowloris,
    Silent,
    TextMessage,
    MalformedFrame,
    Oversized,
    Interleaved,
    DecodeBomb,
    ReadOnlyWrite,
    UnknownChannel,
    OpenFlood,
}

const ATTACKS: [Attack; 12] = [
    Attack::MalformedUpgrade,
    Attack::NoToken,
    Attack::Slowloris,
    Attack::Silent,
    Attack::TextMessage,
    Attack::MalformedFrame,
    Attack::Oversized,
    Attack::Interleaved,
    Attack::DecodeBomb,
    Attack::ReadOnlyWrite,
    Attack::UnknownChannel,
    Attack::OpenFlood,
];

/// What a hostile client needs to reach the server.
#[derive(Debug, Clone)]
struct Target {
    server_addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    write_token: String,
    read_token: String,
}

/// Makes `attack` from `source` and checks the server's answer; returns what was wrong.
async fn attack(target: &Target, source: IpAddr, attack: Attack, id: usize) -> Result<(), String> {
    let addr = target.server_addr;
    let tls = target.tls.clone();
    let connect = |token: &str| {
        let (tls, token) = (tls.clone(), token.to_owned());
        async move {
            RawClient::connect_from(addr, Some(source), tls, Some(&token))
                .await
                .map_err(|e| format!("connecting: {e}"))
        }
    };
    // Connected and past HELLO / WELCOME, as every attack after the handshake starts.
    let welcomed = |token: &str| {
        let connecting = connect(token);
        async move {
            let mut client = connecting.await?;
            client.hello().await;
            Ok::<_, String>(client)
        }
    };
    let expect = |what: &str, got: u16, want: u16| {
        if got == want {
            Ok(())
        } else {
            Err(format!("{what}: got {got}, expected {want}"))
        }
    };
    let doc = format!("swarm/{}", id % 50);
    let channel = ChannelId(1);
    match attack {
        Attack::MalformedUpgrade => {
            let auth = format!("Bearer {}", target.write_token);
            let head = upgrade_head(
                "GET",
                "/ws",
                &["Sec-WebSocket-Key"],
                &[("Authorization", &auth)],
            );
            let response = http_probe::request_from(addr, Some(source), tls.clone(), &head).await;
            expect("upgrade without a key", response.status, 400)
        }
        Attack::NoToken => {
            let head = upgrade_head("GET", "/ws", &[], &[]);
            let response = http_probe::request_from(addr, Some(source), tls.clone(), &head).await;
            expect("upgrade without a token", response.status, 401)
        }
        Attack::Slowloris => {
            // A request head that never ends: the server's header timeout drops it.
            let tcp = connect_tcp(addr, Some(source))
                .await
                .map_err(|e| e.to_string())?;
            let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(
                    rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            stream
                .write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .await
                .map_err(|e| e.to_string())?;
            let mut rest = Vec::new();
            match tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest)).await {
                Ok(_) => Ok(()),
                Err(_) => Err("an unfinished request head was never dropped".into()),
            }
        }
        Attack::Silent => {
            let mut client = connect(&target.write_token).await?;
            // No HELLO: the heartbeat timeout ends it.
            expect("no HELLO", client.expect_close().await, 4010)
        }
        Attack::TextMessage => {
            let mut client = welcomed(&target.write_token).await?;
            client.send_raw(WsMessage::Text("hello?".into())).await;
            expect("a text message", client.expect_close().await, 1003)
        }
        Attack::MalformedFrame => {
            let mut client = welcomed(&target.write_token).await?;
            client.send_frame(ChannelId(1), 0x7f, &[1, 2, 3]).await;
            expect("an unknown frame kind", client.expect_close().await, 1002)
        }
        Attack::Oversized => {
            let mut client = welcomed(&target.write_token).await?;
            open(&mut client, channel, &doc, quire_protocol::Access::Write).await?;
            let piece = vec![0u8; MAX_FRAME as usize - 16];
            for _ in 0..(MAX_MESSAGE as usize / piece.len() + 1) {
                client.send_frame(channel, kind::FRAGMENT, &piece).await;
            }
            expect(
                "fragments beyond the limit",
                client.expect_close().await,
                1009,
            )
        }
        Attack::Interleaved => {
            // Unfinished messages on every channel, each under the limit, together over it.
            let mut client = welcomed(&target.write_token).await?;
            for n in 1..=MAX_CHANNELS {
                let doc = format!("interleaved/{n}");
                open(
                    &mut client,
                    ChannelId(n),
                    &doc,
                    quire_protocol::Access::Write,
                )
                .await?;
            }
            let piece = vec![0u8; MAX_FRAME as usize - 16];
            let per_channel = MAX_MESSAGE as usize / piece.len() / 4;
            for _ in 0..per_channel {
                for n in 1..=MAX_CHANNELS {
                    client
                        .send_frame(ChannelId(n), kind::FRAGMENT, &piece)
                        .await;
                }
            }
            expect(
                "unfinished messages over the limit",
                client.expect_close().await,
                1009,
            )
        }
        Attack::DecodeBomb => {
            let mut client = welcomed(&target.write_token).await?;
            open(&mut client, channel, &doc, quire_protocol::Access::Write).await?;
            // Claims ~47.6M client groups in 4 bytes.
            let bomb = ysync::encode_update(vec![0xbd, 0x95, 0xa7, 0x16]);
            client.send_frame(channel, kind::SYNC, &bomb).await;
            let code = client.expect_channel_close(channel).await;
            client.close().await;
            expect("a decode bomb", code, 4422)
        }
        Attack::ReadOnlyWrite => {
            let mut client = welcomed(&target.read_token).await?;
            open(&mut client, channel, &doc, quire_protocol::Access::Read).await?;
            let update = ysync::encode_update(quire_tests::doc_peer::standalone_insert(
                id as u64 + 1,
                "not allowed",
            ));
            client.send_frame(channel, kind::SYNC, &update).await;
            let code = client.expect_channel_close(channel).await;
            client.close().await;
            expect("a write on a read-only channel", code, 4405)
        }
        Attack::UnknownChannel => {
            let mut client = welcomed(&target.write_token).await?;
            client
                .send_frame(ChannelId(7), kind::SYNC, &ysync::encode_update(vec![0, 0]))
                .await;
            let code = client.expect_channel_close(ChannelId(7)).await;
            client.close().await;
            expect("data on an unknown channel", code, 4404)
        }
        Attack::OpenFlood => {
            let mut client = welcomed(&target.write_token).await?;
            for n in 1..=MAX_CHANNELS {
                let doc = format!("flood/{n}");
                open(
                    &mut client,
                    ChannelId(n),
                    &doc,
                    quire_protocol::Access::Write,
                )
                .await?;
            }
            let over = client
                .open(
                    ChannelId(MAX_CHANNELS + 1),
                    "flood/over",
                    quire_protocol::Access::Write,
                )
                .await;
            client.close().await;
            match over {
                Err(4429) => Ok(()),
                other => Err(format!("open beyond the channel limit: {other:?}")),
            }
        }
    }
}

/// Opens `doc` on `channel`; a refusal is a wrong answer.
async fn open(
    client: &mut RawClient,
    channel: ChannelId,
    doc: &str,
    access: quire_protocol::Access,
) -> Result<(), String> {
    client
        .open(channel, doc, access)
        .await
        .map(|_| ())
        .map_err(|code| format!("open of {doc} refused with {code}"))
}

/// One wave: `clients` hostile clients, `rounds` attacks each, all at once. Returns how many
/// of each attack were answered as documented; any other answer fails the test.
async fn wave(
    target: &Target,
    clients: usize,
    rounds: usize,
    rng: &mut SeededRng,
) -> BTreeMap<Attack, usize> {
    let tally = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tasks = Vec::new();
    for id in 0..clients {
        let plan: Vec<Attack> = (0..rounds)
            .map(|_| ATTACKS[rng.index(ATTACKS.len())])
            .collect();
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (id % SOURCES as usize) as u8));
        let target = target.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            for kind in plan {
                if let Err(wrong) = attack(&target, source, kind, id).await {
                    panic!("hostile client {id} ({source}), {kind:?}: {wrong}");
                }
                *tally.lock().unwrap().entry(kind).or_insert(0) += 1;
            }
        }));
    }
    for task in tasks {
        if let Err(err) = task.await {
            std::panic::resume_unwind(err.into_panic());
        }
    }
    Arc::try_unwrap(tally).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_hostile_clients_get_their_answers_while_honest_ones_keep_syncing() {
    let clients = env_count("QUIRE_SWARM_CLIENTS", 1000);
    let rounds = env_count("QUIRE_SWARM_ROUNDS", 2);
    let waves = env_count("QUIRE_SWARM_WAVES", 2).max(2);
    let mut rng = SeededRng::from_env("hostile_swarm");

    let server = ServerProcess::start(&[
        "--max-frame-size",
        &MAX_FRAME.to_string(),
        "--max-message-size",
        &MAX_MESSAGE.to_string(),
        "--max-channels",
        &MAX_CHANNELS.to_string(),
        "--heartbeat-interval-ms",
        "1000",
        "--heartbeat-timeout-ms",
        "3000",
        // Hostile clients' documents are unloaded soon after they leave.
        "--idle-unload-ms",
        "1000",
    ]);
    let target = Target {
        server_addr: server.addr,
        tls: server.tls(),
        write_token: server.token(&["*"], true, "1h"),
        read_token: server.token(&["*"], false, "1h"),
    };

    // The honest pair, on 127.0.0.1.
    let a = Client::start(
        config(&server, Some(target.write_token.clone())),
        Arc::new(MemoryStore::default()),
    );
    let b = Client::start(
        config(&server, Some(target.write_token.clone())),
        Arc::new(MemoryStore::default()),
    );
    let doc_a = a.open("honest", Access::Write).await.unwrap();
    let doc_b = b.open("honest", Access::Write).await.unwrap();
    append(&doc_a, "<start>");
    until_text(&doc_b, "the first edit", DEADLINE, |t| {
        t.contains("<start>")
    })
    .await;
    let baseline_kib = rss_kib(server.pid());

    // The honest pair edits in turns until the swarm is over; each edit must reach the other.
    let swarming = Arc::new(AtomicBool::new(true));
    let honest = {
        let swarming = swarming.clone();
        let (doc_a, doc_b) = (doc_a.clone(), doc_b.clone());
        tokio::spawn(async move {
            let mut markers = Vec::new();
            let mut slowest = Duration::ZERO;
            while swarming.load(Ordering::Relaxed) {
                let n = markers.len();
                let (from, to) = if n % 2 == 0 {
                    (&doc_a, &doc_b)
                } else {
                    (&doc_b, &doc_a)
                };
                let marker = format!("<honest:{n}>");
                let sent = Instant::now();
                append(from, &marker);
                until_text(
                    to,
                    &format!("{marker} at the other client"),
                    DEADLINE,
                    |t| t.contains(&marker),
                )
                .await;
                slowest = slowest.max(sent.elapsed());
                markers.push(marker);
            }
            (markers, slowest)
        })
    };

    let mut peaks = Vec::new();
    let mut tallies = Vec::new();
    let started = Instant::now();
    for _ in 0..waves {
        let sampler = RssPeak::start(server.pid());
        tallies.push(wave(&target, clients, rounds, &mut rng).await);
        peaks.push(sampler.stop().await);
    }
    let swarm_time = started.elapsed();
    swarming.store(false, Ordering::Relaxed);
    let (markers, slowest) = honest.await.unwrap();

    // The honest pair: every marker saved, present exactly once on both sides.
    until_saved(&a, &doc_a, DEADLINE).await;
    until_saved(&b, &doc_b, DEADLINE).await;
    let text = doc_a.text();
    assert_eq!(text, doc_b.text(), "the honest replicas differ");
    for marker in &markers {
        assert_eq!(occurrences(&text, marker), 1, "{marker}");
    }
    let after_kib = rss_kib(server.pid());
    let answered: usize = tallies.iter().flat_map(|t| t.values()).sum();
    eprintln!(
        "{clients} hostile clients × {rounds} attacks × {waves} waves in {swarm_time:?}: {answered} answered as documented {tallies:?}"
    );
    eprintln!(
        "server RSS: {baseline_kib} KiB before, peaks {peaks:?} KiB per wave, {after_kib} KiB after; \
         honest pair: {} edits synced during the swarm, slowest {slowest:?}",
        markers.len()
    );
    assert_eq!(answered, clients * rounds * waves);
    assert!(
        markers.len() >= 10,
        "the honest pair barely synced: {} edits",
        markers.len()
    );

    // Bounded: never more than the limits allow for this many connections at once (each may
    // buffer unfinished messages up to MAX_MESSAGE, plus 256 KiB of socket, TLS and WebSocket
    // buffers and state), and no accumulation: no wave needs more than 2.5× the first (waves
    // differ by which attacks happen to coincide, up to ~1.5× apart in runs here; a leak grows
    // with every wave). The gauges below check the same exactly.
    let bound_kib = baseline_kib + clients as u64 * (MAX_MESSAGE as u64 / 1024 + 256);
    assert!(
        peaks.iter().all(|&p| p <= bound_kib),
        "RSS peaks {peaks:?} KiB above {bound_kib} KiB"
    );
    assert!(
        peaks.iter().all(|&p| p <= peaks[0] * 5 / 2),
        "RSS grew from wave to wave: {peaks:?} KiB"
    );

    // Nothing is left behind: only the honest pair's connections, channels and document.
    quire_tests::wait::until(
        "the server to release the hostile clients",
        DEADLINE,
        || async {
            let connections = server.metric("quire_connections").await;
            let channels = server.metric("quire_channels").await;
            let documents = server.metric("quire_documents_loaded").await;
            (connections == 2.0 && channels == 2.0 && documents == 1.0).then_some(())
        },
    )
    .await;
    assert!(server.metric("quire_refused_upgrades_total").await > 0.0);
}
