//! The two session cores as a pair, in simulated time, over an in-memory link (`pair/mod.rs`):
//! every row of PROTOCOL §10.1 and §10.2 with the client's reaction, the schedules of §8
//! (heartbeat, reconnect backoff, channel re-open), resync without loss or duplication,
//! fragmentation, the error budget and the connection rules the server enforces. No sockets,
//! no sleeping: the whole file runs in well under a second.

mod pair;

use std::time::Duration;

use pair::{doc, noise, OpenPolicy, Pair};
use quire_protocol::request::{ReplyBody, RequestOp};
use quire_protocol::session::{
    ClientEvent, Credential, NotSent, ServerOutput, ServerSession, Status, Transmit,
};
use quire_protocol::ysync::encode_update;
use quire_protocol::{
    Access, BackoffPolicy, ChannelCode, ChannelId, CloseCode, DocId, Hello, Limits, Message,
    Reaction, Welcome, PROTOCOL_REVISION,
};

const P: BackoffPolicy = BackoffPolicy::DEFAULT;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A pair with `a` open and in sync.
fn synced_pair() -> Pair {
    let mut p = Pair::new();
    p.open("a", Access::Write);
    assert!(p.run_until(secs(1), |p| p.client.is_synced(&doc("a"))));
    p
}

fn reconnecting(status: &Status) -> Option<(Duration, u32, u16)> {
    match status {
        Status::Reconnecting {
            retry_in,
            attempt,
            last_code,
            ..
        } => Some((*retry_in, *attempt, *last_code)),
        _ => None,
    }
}

#[test]
fn edits_made_offline_reach_the_server_and_are_acknowledged() {
    let mut p = Pair::new();
    p.open("a", Access::Write);
    p.type_text("a", "hello");
    assert!(p.run_until(secs(1), |p| p.pending_count("a") == 0));
    p.type_text("a", " world");
    assert_eq!(p.pending_count("a"), 1);
    assert!(p.run_until(secs(1), |p| p.pending_count("a") == 0));
    assert_eq!(p.world.text("a"), "hello world");
    assert_eq!(p.client_text("a"), "hello world");
    assert!(p.client.is_synced(&doc("a")));
}

#[test]
fn heartbeat_both_ends_ping_and_stay_up_on_an_idle_link() {
    let mut p = synced_pair();
    p.take_bytes_to_server();
    p.advance(secs(120));
    assert!(p.up(), "an idle connection stays up");
    assert!(p.server_closes.is_empty());
    // 12 pings of 6 bytes or so each way in 120 s: the heartbeat is all that crossed.
    let sent = p.take_bytes_to_server();
    assert!(sent > 0 && sent < 400, "{sent} bytes");
    let rtts = p.count(|e| matches!(e, ClientEvent::Status(Status::Connected { rtt: Some(_) })));
    assert!(rtts >= 11, "an RTT measured per ping: {rtts}");
}

#[test]
fn server_closes_a_silent_client_with_4008_after_the_timeout() {
    let mut p = synced_pair();
    let silent_from = p.elapsed();
    p.drop_to_server(true);
    assert!(p.run_until(secs(60), |p| !p.server_closes.is_empty()));
    assert_eq!(p.server_closes, [CloseCode::HeartbeatTimeout]);
    let after = p.elapsed() - silent_from;
    assert!(after >= secs(29) && after <= secs(31), "{after:?}");
    assert!(p.run_until(ms(100), |p| p
        .last_status()
        .is_some_and(|s| reconnecting(&s).is_some())));
    let (_, _, code) = reconnecting(&p.last_status().unwrap()).unwrap();
    assert_eq!(code, 4008);
    p.drop_to_server(false);
    assert!(p.run_until(secs(5), |p| p.up() && p.client.is_synced(&doc("a"))));
}

#[test]
fn client_drops_a_half_open_connection_after_the_timeout_and_reconnects() {
    let mut p = synced_pair();
    let from = p.elapsed();
    p.half_open = true;
    assert!(p.run_until(secs(60), |p| !p.up()));
    let after = p.elapsed() - from;
    assert!(after >= secs(29) && after <= secs(31), "{after:?}");
    let (retry_in, attempt, code) = reconnecting(&p.last_status().unwrap()).unwrap();
    assert_eq!((attempt, code), (1, 4008));
    assert!(retry_in < P.ceiling(0));
    p.half_open = false;
    assert!(p.run_until(secs(5), |p| p.up() && p.client.is_synced(&doc("a"))));
}

#[test]
fn a_client_that_never_says_hello_is_closed_with_4010() {
    let mut p = Pair::new();
    // The HELLO is lost; so is everything after it.
    p.drop_to_server(true);
    assert!(p.run_until(secs(40), |p| !p.server_closes.is_empty()));
    assert_eq!(p.server_closes, [CloseCode::HelloExpected]);
}

/// §10.1: the server ends the connection with each code; the client reacts as the table says.
#[test]
fn every_connection_close_code_gets_its_reaction() {
    let mut codes: Vec<CloseCode> = CloseCode::ALL.to_vec();
    codes.push(CloseCode::Other(4999));
    for code in codes {
        let mut p = synced_pair();
        let closed_at = p.elapsed();
        p.server_close_connection(code);
        p.advance(ms(20));
        assert!(!p.up(), "{code:?}");
        let status = p.last_status().unwrap();
        assert!(
            p.count(|e| matches!(e, ClientEvent::Offline { doc } if doc == &pair::doc("a"))) >= 1,
            "{code:?}: the document goes offline"
        );
        match code.reaction() {
            Reaction::Stop | Reaction::DoNotReopen => {
                assert!(
                    matches!(status, Status::Refused { .. }),
                    "{code:?}: {status:?}"
                );
                p.advance(secs(300));
                assert_eq!(p.connects().len(), 1, "{code:?}: no reconnect");
                // A new trust (or token) is what makes it try again.
                p.client.credential_changed(Credential::Trust);
                assert!(p.run_until(secs(1), |p| p.up()), "{code:?}");
            }
            Reaction::WaitForNewCredentials => {
                assert!(
                    matches!(status, Status::AuthFailed { .. }),
                    "{code:?}: {status:?}"
                );
                p.advance(secs(300));
                assert_eq!(p.connects().len(), 1, "{code:?}: no reconnect");
                p.client.credential_changed(Credential::Trust);
                p.pump();
                assert_eq!(p.connects().len(), 1, "{code:?}: a trust is not a token");
                p.client.credential_changed(Credential::Token);
                assert!(p.run_until(secs(1), |p| p.up()), "{code:?}");
            }
            reaction => {
                let (retry_in, attempt, last) = reconnecting(&status).expect("reconnecting");
                assert_eq!((attempt, last), (1, code.as_u16()), "{code:?}");
                let ceiling = if reaction == Reaction::RetrySoon {
                    P.soon
                } else {
                    P.ceiling(0)
                };
                assert!(retry_in < ceiling, "{code:?}: {retry_in:?}");
                assert!(
                    p.run_until(secs(3), |p| p.connects().len() == 2),
                    "{code:?}"
                );
                let waited = p.connects()[1] - closed_at;
                // The close took one link latency to arrive; the connect comes retry_in later.
                assert!(
                    waited >= retry_in && waited <= retry_in + ms(20),
                    "{code:?}"
                );
            }
        }
        assert!(
            p.run_until(secs(2), |p| p.client.is_synced(&doc("a"))),
            "{code:?}: resynced"
        );
    }
}

/// 1006 is never sent: a lost socket is reacted to as if it were.
#[test]
fn a_lost_socket_is_1006_and_retried_with_backoff() {
    let mut p = synced_pair();
    p.cut();
    let (retry_in, attempt, code) = reconnecting(&p.last_status().unwrap()).unwrap();
    assert_eq!((attempt, code), (1, 1006));
    assert!(retry_in < P.ceiling(0));
    assert!(p.run_until(secs(2), |p| p.up() && p.client.is_synced(&doc("a"))));
}

/// §10.2: the server closes the channel with each code (a room's close, or a refused OPEN).
#[test]
fn every_channel_close_code_gets_its_reaction() {
    for code in ChannelCode::ALL.iter().copied() {
        for refused_at_open in [false, true] {
            let mut p = Pair::new();
            if refused_at_open {
                p.world.policies.insert(doc("a"), OpenPolicy::Refuse(code));
                p.open("a", Access::Write);
                p.advance(ms(50));
            } else {
                p.open("a", Access::Write);
                assert!(p.run_until(secs(1), |p| p.client.is_synced(&doc("a"))));
                p.server_close_doc("a", code);
                p.advance(ms(20));
            }
            let what = format!("{code:?}, at open: {refused_at_open}");
            assert!(p.up(), "{what}: the connection stays up");
            let opened = |p: &Pair| p.count(|e| matches!(e, ClientEvent::Opened { .. }));
            let first = opened(&p);
            match code.reaction() {
                Reaction::DoNotReopen | Reaction::Stop => {
                    assert_eq!(
                        p.count(|e| matches!(e, ClientEvent::Failed { code: c, .. } if *c == code.as_u16())),
                        1,
                        "{what}"
                    );
                    p.advance(secs(120));
                    assert_eq!(opened(&p), first, "{what}: never re-opened");
                    assert_eq!(p.client.docs().next(), Some((&doc("a"), true)));
                }
                reaction => {
                    p.world.policies.remove(&doc("a"));
                    assert_eq!(
                        p.count(|e| matches!(e, ClientEvent::Failed { .. })),
                        0,
                        "{what}"
                    );
                    let ceiling = if reaction == Reaction::RetrySoon {
                        P.soon
                    } else {
                        P.ceiling(0)
                    };
                    let from = p.elapsed();
                    assert!(
                        p.run_until(secs(3), |p| opened(p) == first + 1),
                        "{what}: re-opened"
                    );
                    assert!(p.elapsed() - from <= ceiling + ms(20), "{what}");
                    assert!(p.run_until(secs(1), |p| p.client.is_synced(&doc("a"))));
                }
            }
            // The server was never told off for the client's answers.
            assert!(p.server_closes.is_empty(), "{what}: {:?}", p.server_closes);
        }
    }
}

/// §8.2: full jitter below base·2^attempt, capped at 30 s; the counter resets once a
/// connection stays up for 10 s.
#[test]
fn reconnect_schedule_follows_the_backoff_table() {
    let mut p = synced_pair();
    p.server_down = true;
    p.cut();
    assert!(p.run_until(secs(400), |p| p.connects().len() >= 12));
    let waits: Vec<(Duration, u32)> = p
        .statuses()
        .iter()
        .filter_map(reconnecting)
        .map(|(retry_in, attempt, _)| (retry_in, attempt))
        .collect();
    assert!(waits.len() >= 11);
    for (retry_in, attempt) in &waits {
        assert!(
            *retry_in < P.ceiling(attempt - 1),
            "attempt {attempt}: {retry_in:?}"
        );
    }
    let attempts: Vec<u32> = waits.iter().map(|(_, a)| *a).collect();
    assert_eq!(attempts[..11], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    // Each connect came when its wait said.
    let connects = p.connects();
    let distinct: std::collections::BTreeSet<_> = waits.iter().map(|(d, _)| *d).collect();
    assert!(distinct.len() > 5, "jitter spreads the delays: {waits:?}");
    assert!(connects.windows(2).all(|w| w[1] >= w[0]));

    // Back up, and stable for 10 s: the next failure starts from attempt 0 again.
    p.server_down = false;
    assert!(p.run_until(secs(31), |p| p.up()));
    p.advance(secs(11));
    p.cut();
    let (retry_in, attempt, _) = reconnecting(&p.last_status().unwrap()).unwrap();
    assert_eq!(attempt, 1);
    assert!(retry_in < P.ceiling(0));

    // Up for less than 10 s: the counter goes on.
    assert!(p.run_until(secs(2), |p| p.up()));
    p.advance(secs(2));
    p.cut();
    let (_, attempt, _) = reconnecting(&p.last_status().unwrap()).unwrap();
    assert_eq!(attempt, 2);
}

/// §8.2: a channel closed with a retrying code is re-opened with a counter of its own, which
/// resets once the channel has stayed open for 10 s.
#[test]
fn channel_reopen_schedule_backs_off_and_resets_when_stable() {
    let mut p = synced_pair();
    let opened = |p: &Pair| p.count(|e| matches!(e, ClientEvent::Opened { .. }));
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let before = opened(&p);
        p.server_close_doc("a", ChannelCode::StorageFailure);
        let from = p.elapsed();
        assert!(p.run_until(secs(40), |p| opened(p) == before + 1));
        gaps.push(p.elapsed() - from);
    }
    for (attempt, gap) in gaps.iter().enumerate() {
        assert!(
            *gap <= P.ceiling(attempt as u32) + ms(20),
            "re-open {attempt}: {gap:?}"
        );
    }
    assert!(p.up(), "the connection never went down");
    // Open for 10 s: the next close is retried on the first step again.
    p.advance(secs(11));
    let before = opened(&p);
    p.server_close_doc("a", ChannelCode::StorageFailure);
    let from = p.elapsed();
    assert!(p.run_until(secs(5), |p| opened(p) == before + 1));
    assert!(p.elapsed() - from <= P.ceiling(0) + ms(20));
}

/// §8.2 and §6.4: edits on both sides during an outage; after the reconnect both replicas
/// hold everything once, and only the difference crossed the wire.
#[test]
fn resync_after_an_outage_loses_nothing_duplicates_nothing_and_sends_the_difference() {
    let mut p = Pair::new();
    p.open("a", Access::Write);
    let big = noise(100_000, 3);
    p.type_text("a", &big);
    assert!(p.run_until(secs(2), |p| p.pending_count("a") == 0));

    p.server_down = true;
    p.cut();
    p.type_text("a", "[offline edit]");
    p.type_text("a", "[second]");
    assert_eq!(p.pending_count("a"), 2);
    {
        // Someone else's edit reaches the server meanwhile.
        use quire_protocol::yrs::{Text, Transact};
        let stored = p.world.docs.get(&doc("a")).unwrap();
        let text = stored.get_or_insert_text("content");
        let mut txn = stored.transact_mut();
        text.insert(&mut txn, 0, "[theirs]");
    }
    p.take_bytes_to_server();
    p.take_bytes_to_client();
    p.server_down = false;
    assert!(p.run_until(secs(5), |p| p.up() && p.pending_count("a") == 0));
    assert!(p.run_until(secs(1), |p| p.client.is_synced(&doc("a"))));

    let expected = format!("[theirs]{big}[offline edit][second]");
    assert_eq!(p.client_text("a"), expected);
    assert_eq!(p.world.text("a"), expected);
    let (up, down) = (p.take_bytes_to_server(), p.take_bytes_to_client());
    assert!(up < 400, "{up} bytes up for a 100 kB document");
    assert!(down < 400, "{down} bytes down");
}

/// An edit the server applied whose ACK was lost is sent again after the reconnect (it is
/// still pending), and applying it twice changes nothing.
#[test]
fn a_lost_ack_means_a_resend_and_no_duplicate() {
    let mut p = Pair::with(ms(5), 11);
    p.open("a", Access::Write);
    assert!(p.run_until(secs(1), |p| p.client.is_synced(&doc("a"))));
    p.type_text("a", "once");
    // The update takes 5 ms to arrive; the ACK would take 5 more.
    p.advance(ms(7));
    assert_eq!(p.world.text("a"), "once");
    p.cut();
    assert_eq!(p.pending_count("a"), 1, "not acknowledged: still pending");
    assert!(p.run_until(secs(2), |p| p.up() && p.pending_count("a") == 0));
    assert_eq!(p.world.text("a"), "once");
    assert_eq!(p.client_text("a"), "once");
}

/// §6.3: a CLOSE right after a write is answered after that write's ACK.
#[test]
fn closing_a_document_right_after_a_write_gets_its_ack_first() {
    let mut p = synced_pair();
    p.type_text("a", "last words");
    p.client.close_doc(&doc("a"), None);
    p.pump();
    assert!(p.run_until(secs(1), |p| p.pending_count("a") == 0));
    assert_eq!(p.world.text("a"), "last words");
    let acked = p
        .events
        .iter()
        .position(|(_, e)| matches!(e, ClientEvent::Acked { .. }))
        .unwrap();
    assert!(p.events[acked..]
        .iter()
        .all(|(_, e)| !matches!(e, ClientEvent::Failed { .. })));
    assert_eq!(p.client.docs().count(), 0);
    assert_eq!(p.channel_closes, [(ChannelId(1), 1000)]);
}

/// §7: big messages both ways are split to the announced frame size and joined again, with
/// progress reported while they arrive.
#[test]
fn large_messages_are_fragmented_both_ways() {
    let mut p = Pair::new();
    p.server_config.limits.max_frame_size = Limits::MIN_FRAME_SIZE;
    {
        use quire_protocol::yrs::{Text, Transact};
        let stored = p.world.docs.entry(doc("a")).or_default();
        let text = stored.get_or_insert_text("content");
        text.insert(&mut stored.transact_mut(), 0, &noise(50_000, 5));
    }
    p.open("a", Access::Write);
    assert!(p.run_until(secs(2), |p| p.client.is_synced(&doc("a"))));
    assert_eq!(p.client_text("a"), noise(50_000, 5));
    let progress =
        p.count(|e| matches!(e, ClientEvent::Receiving { received, .. } if *received > 0));
    assert!(progress > 40, "{progress} progress events");

    let upload = noise(30_000, 9);
    p.type_text("a", &upload);
    assert!(p.run_until(secs(2), |p| p.pending_count("a") == 0));
    assert_eq!(p.world.text("a"), format!("{}{upload}", noise(50_000, 5)));
    assert!(p.server_closes.is_empty());
}

/// §7: an unfinished fragmented message is closed with 1008 once the time limit passes, even
/// while the client keeps the heartbeat going.
#[test]
fn an_unfinished_message_times_out_with_1008() {
    let mut p = Pair::new();
    p.server_config.fragment_timeout = secs(5);
    p.open("a", Access::Write);
    assert!(p.run_until(secs(1), |p| p.client.is_synced(&doc("a"))));
    let mut frames = Vec::new();
    let big = Message::Sync(encode_update(vec![0; 5000]));
    quire_protocol::encode_fragmented(ChannelId(1), &big, 1024, |f| frames.push(f));
    p.inject_to_server(frames[0].clone());
    let from = p.elapsed();
    assert!(p.run_until(secs(10), |p| !p.server_closes.is_empty()));
    assert_eq!(p.server_closes, [CloseCode::PolicyViolation]);
    let after = p.elapsed() - from;
    assert!(after >= secs(5) && after <= secs(5) + ms(20), "{after:?}");
}

/// §6.8: more than 100 channel errors, or refusals beyond their rate, close with 1008 after
/// the CLOSEs already queued.
#[test]
fn the_error_budget_closes_with_1008_after_the_queued_closes() {
    let mut p = synced_pair();
    for i in 0..101 {
        p.inject_to_server(Pair::frame(1000 + i, Message::Sync(vec![0, 0])));
    }
    p.advance(ms(20));
    assert_eq!(p.server_closes, [CloseCode::PolicyViolation]);
    let unknown = p.channel_closes.iter().filter(|(_, c)| *c == 4404).count();
    assert_eq!(unknown, 101, "every CLOSE went out before the 1008");
    let (_, _, code) = reconnecting(&p.last_status().unwrap()).unwrap();
    assert_eq!(code, 1008);

    // Eleven undecodable updates at once: the 11th closes (10 at once, then 1 per 6 s).
    let mut p = synced_pair();
    for i in 0..11 {
        let channel = 500 + i;
        p.inject_to_server(Pair::frame(
            channel,
            Message::Open {
                access: Access::Write,
                doc: doc(&format!("r{i}")),
            },
        ));
        p.inject_to_server(Pair::frame(
            channel,
            Message::Sync(vec![2, 3, 0xff, 0xff, 0xff]),
        ));
    }
    p.advance(ms(20));
    let refused = p.channel_closes.iter().filter(|(_, c)| *c == 4422).count();
    assert_eq!(refused, 11);
    assert_eq!(p.server_closes, [CloseCode::PolicyViolation]);
}

/// §5.1, §4.2, §7: what closes the connection, and with which code.
#[test]
fn server_rules_for_the_connection() {
    let hello = || {
        Pair::frame(
            0,
            Message::Hello(Hello {
                revision: PROTOCOL_REVISION,
                client: "t".into(),
            }),
        )
    };
    let open = |channel, name: &str| {
        Pair::frame(
            channel,
            Message::Open {
                access: Access::Write,
                doc: doc(name),
            },
        )
    };
    let mut first_piece = Vec::new();
    quire_protocol::encode_fragmented(
        ChannelId(1),
        &Message::Sync(encode_update(vec![0; 3000])),
        1024,
        |f| first_piece.push(f),
    );
    let welcome = Pair::frame(
        0,
        Message::Welcome(Welcome {
            conn_id: 1,
            heartbeat_interval_ms: 1,
            heartbeat_timeout_ms: 1,
            limits: Limits::default(),
        }),
    );
    let cases: Vec<(&str, Vec<Vec<u8>>, CloseCode)> = vec![
        (
            "frame before HELLO",
            vec![Pair::frame(0, Message::Ping(1))],
            CloseCode::HelloExpected,
        ),
        (
            "second HELLO",
            vec![hello(), hello()],
            CloseCode::ProtocolError,
        ),
        (
            "unknown revision",
            vec![Pair::frame(
                0,
                Message::Hello(Hello {
                    revision: 2,
                    client: "t".into(),
                }),
            )],
            CloseCode::ProtocolError,
        ),
        (
            "server-only message",
            vec![hello(), welcome],
            CloseCode::ProtocolError,
        ),
        (
            "malformed frame",
            vec![hello(), vec![0x80]],
            CloseCode::ProtocolError,
        ),
        (
            "OPEN inside a fragmented message",
            vec![hello(), open(1, "a"), first_piece[0].clone(), open(1, "b")],
            CloseCode::ProtocolError,
        ),
        (
            "CLOSE inside a fragmented message",
            vec![
                hello(),
                open(1, "a"),
                first_piece[0].clone(),
                Pair::frame(
                    1,
                    Message::Close {
                        code: 1000,
                        reason: String::new(),
                    },
                ),
            ],
            CloseCode::ProtocolError,
        ),
        (
            "frame over max_frame_size",
            vec![hello(), {
                let mut big = Vec::new();
                quire_protocol::encode_fragmented(
                    ChannelId(1),
                    &Message::Sync(vec![0; 2 << 20]),
                    4 << 20,
                    |f| big.push(f),
                );
                big.remove(0)
            }],
            CloseCode::MessageTooBig,
        ),
        (
            "invalid UTF-8 in a string",
            vec![{
                let mut bad = hello();
                let last = bad.len() - 1;
                bad[last] = 0xff;
                bad
            }],
            CloseCode::InvalidPayload,
        ),
        (
            "request without an ID",
            vec![hello(), Pair::frame(0, Message::Request(vec![]))],
            CloseCode::ProtocolError,
        ),
    ];
    for (what, frames, expected) in cases {
        let now = std::time::Instant::now();
        let mut server: ServerSession<DocId> = ServerSession::new(now, pair::server_config());
        let mut closed = None;
        for bytes in frames {
            server.handle_frame(now, &bytes);
            while let Some(output) = server.poll_output() {
                match output {
                    ServerOutput::Open { channel, doc, .. } => {
                        let _ = server.accept_open(channel, Access::Write, doc);
                    }
                    ServerOutput::CloseConnection { code, .. } => closed = Some(code),
                    _ => {}
                }
            }
        }
        assert_eq!(closed, Some(expected), "{what}");
    }
    let now = std::time::Instant::now();
    let mut server: ServerSession<DocId> = ServerSession::new(now, pair::server_config());
    server.handle_text(now);
    assert!(matches!(
        server.poll_output(),
        Some(ServerOutput::CloseConnection {
            code: CloseCode::UnsupportedData,
            ..
        })
    ));
}

/// §6.2, §6.7, §6.8, §9: what closes only a channel.
#[test]
fn server_rules_for_channels() {
    let mut p = synced_pair();
    p.world
        .policies
        .insert(doc("ro"), OpenPolicy::Accept(Access::Read));
    // OPEN on an ID in use: 4409.
    p.inject_to_server(Pair::frame(
        1,
        Message::Open {
            access: Access::Write,
            doc: doc("b"),
        },
    ));
    // A write on a read-only channel: 4405.
    p.inject_to_server(Pair::frame(
        7,
        Message::Open {
            access: Access::Write,
            doc: doc("ro"),
        },
    ));
    p.inject_to_server(Pair::frame(7, Message::Sync(encode_update(vec![0, 0]))));
    // A frame on a channel that is not open: 4404.
    p.inject_to_server(Pair::frame(9, Message::Awareness(vec![0])));
    // A bad document ID: 4400 (the frame names the channel, so only the channel is refused).
    let mut bad_open = Pair::frame(
        11,
        Message::Open {
            access: Access::Write,
            doc: doc("x"),
        },
    );
    bad_open.pop(); // the ID "x" becomes "" with its length byte left at 1: malformed
    let len_at = bad_open.len() - 1;
    bad_open[len_at] = 0;
    p.inject_to_server(bad_open);
    p.advance(ms(20));
    let codes: Vec<u16> = p.channel_closes.iter().map(|(_, c)| *c).collect();
    assert!(codes.contains(&4409), "{codes:?}");
    assert!(codes.contains(&4405), "{codes:?}");
    assert!(codes.contains(&4404), "{codes:?}");
    assert!(codes.contains(&4400), "{codes:?}");
    assert!(p.server_closes.is_empty(), "{:?}", p.server_closes);
    assert!(p.up());

    // Too many channels: 4429.
    let mut p = Pair::new();
    p.server_config.limits.max_channels = 2;
    for name in ["a", "b", "c"] {
        p.open(name, Access::Write);
    }
    p.advance(ms(50));
    let codes: Vec<u16> = p.channel_closes.iter().map(|(_, c)| *c).collect();
    assert_eq!(codes, [4429]);
}

/// §5.3, §10.1 4001: the token runs out while connected; the client waits for a new one.
#[test]
fn token_expiry_closes_with_4001_and_waits_for_a_new_token() {
    let mut p = Pair::new();
    p.server_config.token_expires = Some(p.now + secs(60));
    p.open("a", Access::Write);
    assert!(p.run_until(secs(70), |p| !p.server_closes.is_empty()));
    assert_eq!(p.server_closes, [CloseCode::TokenExpired]);
    let at = p.elapsed();
    assert!(at >= secs(60) && at <= secs(61), "{at:?}");
    p.advance(ms(20));
    assert!(matches!(p.last_status(), Some(Status::AuthFailed { .. })));
    p.advance(secs(600));
    assert_eq!(p.connects().len(), 1);
    p.server_config.token_expires = None;
    p.client.credential_changed(Credential::Token);
    assert!(p.run_until(secs(1), |p| p.up() && p.client.is_synced(&doc("a"))));
}

/// §5.4, §6.9: requests and their replies; a request whose channel closes is unanswered.
#[test]
fn requests_are_answered_or_reported_unanswered() {
    let mut p = Pair::new();
    assert_eq!(
        p.client.request(None, RequestOp::ListTrash),
        Err(NotSent::Offline)
    );
    p.open("a", Access::Write);
    assert!(p.run_until(secs(1), |p| p.client.is_synced(&doc("a"))));
    assert_eq!(
        p.client.request(Some(&doc("zzz")), RequestOp::ListVersions),
        Err(NotSent::NotOpen)
    );
    let trash = p.client.request(None, RequestOp::ListTrash).unwrap();
    let versions = p
        .client
        .request(Some(&doc("a")), RequestOp::Trash { doc: "x".into() })
        .unwrap();
    p.pump();
    p.advance(ms(20));
    assert_eq!(
        p.count(|e| matches!(e, ClientEvent::Reply { id, result: Ok(ReplyBody::Trash(_)) } if *id == trash)),
        1
    );
    assert_eq!(
        p.count(|e| matches!(e, ClientEvent::Reply { id, result: Ok(ReplyBody::Done) } if *id == versions)),
        1
    );
    // The channel closes while a request is on its way: it is never answered.
    let lost = p
        .client
        .request(Some(&doc("a")), RequestOp::ListVersions)
        .unwrap();
    p.pump();
    p.server_close_doc("a", ChannelCode::GoingAway);
    p.advance(ms(20));
    assert_eq!(
        p.count(|e| matches!(e, ClientEvent::Unanswered { id } if *id == lost)),
        1
    );
    // And a connection that ends leaves its requests unanswered too.
    let pending = p.client.request(None, RequestOp::ListTrash).unwrap();
    p.cut();
    assert_eq!(
        p.count(|e| matches!(e, ClientEvent::Unanswered { id } if *id == pending)),
        1
    );
}

/// A client that shuts down sends its Close and never reconnects.
#[test]
fn client_shutdown_closes_and_stays_closed() {
    let mut p = synced_pair();
    p.client.shutdown(CloseCode::Normal);
    assert_eq!(
        p.client.poll_transmit(),
        Some(Transmit::Close(CloseCode::Normal))
    );
    p.pump();
    assert_eq!(p.last_status(), Some(Status::Closed));
    p.advance(secs(300));
    assert_eq!(p.connects().len(), 1);
}

/// Read-only: local edits stay pending rather than earn a 4405.
#[test]
fn a_read_only_channel_keeps_local_edits_pending() {
    let mut p = Pair::new();
    p.world
        .policies
        .insert(doc("a"), OpenPolicy::Accept(Access::Read));
    p.open("a", Access::Write);
    assert!(p.run_until(secs(1), |p| p.client.is_synced(&doc("a"))));
    p.type_text("a", "mine");
    p.advance(secs(1));
    assert_eq!(p.pending_count("a"), 1);
    assert!(p.channel_closes.is_empty(), "{:?}", p.channel_closes);
}
