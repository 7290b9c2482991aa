//! Checks docs/PROTOCOL.md against this crate. Every ```` ```hex <name> ```` block in the spec is
//! one worked example; this test knows each by name, builds the typed value it stands for,
//! and checks the bytes both ways. The y-protocols payloads come from the golden vectors made
//! by the JavaScript libraries (tests/vectors/ysync.json), so the examples are what a Yjs peer
//! really sends. The close-code tables of §10 are checked against `close_code.rs` as well.

use std::collections::{BTreeMap, BTreeSet};

use quire_protocol::frame::{Access, Frame, Hello, Message, Welcome};
use quire_protocol::request::{op, Reply, ReplyBody, Request, RequestOp, VersionInfo, VersionKind};
use quire_protocol::yrs::{ClientID, Doc, GetString, ReadTxn, StateVector, Transact};
use quire_protocol::ysync::{self, SyncPayload};
use quire_protocol::{
    encode_fragmented, ChannelCode, ChannelId, CloseCode, DocId, HeartbeatConfig, Limits, Reaction,
    Reassembler, StateDigest,
};

/// The illustrative frame limit of the fragmentation example (real servers announce ≥ 1024).
const TINY_FRAME: u32 = 8;
const FRAGMENTED: [&str; 4] = [
    "fragmented-1",
    "fragmented-2",
    "fragmented-3",
    "fragmented-4",
];
const WS_CLOSE: &str = "ws-close-going-away";

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {path}: {err}"))
}

/// Every ```` ```hex name ```` block of the spec, by name. Text after `#` on a line is a comment.
fn hex_blocks(spec: &str) -> BTreeMap<String, Vec<u8>> {
    let mut blocks = BTreeMap::new();
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim().strip_prefix("```hex") else {
            continue;
        };
        let name = info.trim();
        assert!(!name.is_empty(), "a ```hex block has no example name");
        let mut bytes = Vec::new();
        for line in lines.by_ref().take_while(|l| l.trim() != "```") {
            let data = line.split('#').next().unwrap_or_default();
            for token in data.split_whitespace() {
                assert_eq!(token.len(), 2, "{name}: `{token}` is not one hex byte");
                let byte = u8::from_str_radix(token, 16);
                bytes.push(byte.unwrap_or_else(|_| panic!("{name}: bad hex `{token}`")));
            }
        }
        let previous = blocks.insert(name.to_owned(), bytes);
        assert!(previous.is_none(), "example `{name}` appears twice");
    }
    blocks
}

/// A golden y-protocols message made by the JavaScript libraries.
fn golden(name: &str) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/ysync.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("ysync.json is JSON");
    let hex = json[name]["hex"].as_str().expect("vector exists");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn on(channel: u32, message: Message) -> Frame {
    Frame::new(ChannelId(channel), message)
}

fn open(access: Access, doc: &str) -> Message {
    let doc = DocId::parse(doc, Limits::DEFAULT_MAX_DOC_ID_LEN).unwrap();
    Message::Open { access, doc }
}

fn close(code: ChannelCode) -> Message {
    let reason = code.description().into();
    let code = code.as_u16();
    Message::Close { code, reason }
}

/// The client's step 2 answering a server that holds `{client 1: clock 5}`: it has nothing the
/// server lacks, so the update is empty.
fn client_step2() -> Message {
    let mut server_sv = StateVector::default();
    server_sv.set_max(ClientID::new(1), 5);
    Message::Sync(ysync::encode_step2(
        Doc::new().transact().encode_diff_v1(&server_sv),
    ))
}

/// Every example that is one mux frame, with the typed frame it must decode to.
fn frame_examples() -> Vec<(&'static str, Frame)> {
    let heartbeat = HeartbeatConfig::DEFAULT;
    let hello = Hello {
        revision: quire_protocol::PROTOCOL_REVISION,
        client: "quire-js/1.0".into(),
    };
    let welcome = Welcome {
        conn_id: 42,
        heartbeat_interval_ms: heartbeat.interval.as_millis() as u32,
        heartbeat_timeout_ms: heartbeat.timeout.as_millis() as u32,
        limits: Limits::default(),
    };
    let (read, write) = (Access::Read, Access::Write);
    let sync = |vector| Message::Sync(golden(vector));
    let awareness = |vector| Message::Awareness(golden(vector));
    vec![
        ("hello", Frame::control(Message::Hello(hello))),
        ("welcome", Frame::control(Message::Welcome(welcome))),
        ("ping", Frame::control(Message::Ping(1))),
        ("pong", Frame::control(Message::Pong(1))),
        ("open-channel", on(1, open(write, "team/notes"))),
        ("opened", on(1, Message::Opened { access: write })),
        ("sync-step1-server", on(1, sync("sync_step1_text"))),
        ("awareness", on(1, awareness("awareness_update"))),
        ("sync-step1-client", on(1, sync("sync_step1_empty"))),
        ("sync-step2-client", on(1, client_step2())),
        ("sync-step2-server", on(1, sync("sync_step2_text"))),
        ("sync-update", on(1, sync("sync_update_insert"))),
        ("ack", on(1, Message::Ack(2))),
        ("awareness-removal", on(1, awareness("awareness_removal"))),
        ("open-read-only", on(2, open(read, "secret/plans"))),
        ("refused-channel", on(2, close(ChannelCode::Forbidden))),
        ("channel-close", on(1, close(ChannelCode::Normal))),
        (
            "request-list-versions",
            on(1, request(3, RequestOp::ListVersions)),
        ),
        ("reply-versions", on(1, versions_reply())),
        (
            "request-trash",
            on(
                0,
                request(
                    4,
                    RequestOp::Trash {
                        doc: "team/old".into(),
                    },
                ),
            ),
        ),
        (
            "reply-done",
            on(0, Message::Reply(Reply::ok(4, ReplyBody::Done).encode())),
        ),
        ("request-digest", on(1, request(5, RequestOp::Digest))),
        (
            "reply-digest",
            on(
                1,
                Message::Reply(Reply::ok(5, ReplyBody::Digest(hello_world_digest())).encode()),
            ),
        ),
    ]
}

fn request(id: u32, op: RequestOp) -> Message {
    Message::Request(Request::new(id, op).encode())
}

/// §6.10: the digest of the document of §11.3 and §11.4, from the golden vectors.
fn hello_world_digest() -> StateDigest {
    let doc = Doc::new();
    for vector in ["sync_step2_text", "sync_update_insert"] {
        apply(&doc, &golden(vector));
    }
    assert_eq!(text(&doc), "hello world");
    let digest = StateDigest::of(&doc.transact());
    digest
}

#[test]
fn the_digest_example_is_the_documents_digest() {
    let blocks = hex_blocks(&spec());
    assert_eq!(blocks["digest-hello-world"], hello_world_digest().0);
    assert_eq!(
        hello_world_digest(),
        StateDigest::hash(&[0x01, 0x01, 0x0b, 0x00]),
        "the canonical bytes §6.10 gives"
    );
}

/// §11.9: one named version.
fn versions_reply() -> Message {
    let version = VersionInfo {
        id: 7,
        created_ms: 1_780_000_000_000,
        kind: VersionKind::Named,
        name: "Draft".into(),
        authors: vec!["Ada".into()],
        size: 42,
    };
    Message::Reply(Reply::ok(3, ReplyBody::Versions(vec![version])).encode())
}

#[test]
fn request_examples_read_back_as_typed_requests_and_replies() {
    let blocks = hex_blocks(&spec());
    let body = |name: &str| match Frame::decode(&blocks[name], &Limits::default()) {
        Ok(Frame {
            message: Message::Request(body) | Message::Reply(body),
            ..
        }) => body,
        other => panic!("{name}: expected a request or a reply, got {other:?}"),
    };
    assert_eq!(
        Request::decode(&body("request-trash")).unwrap().op,
        RequestOp::Trash {
            doc: "team/old".into()
        }
    );
    let reply = Reply::decode(&body("reply-versions"), op::LIST_VERSIONS).unwrap();
    let Ok(ReplyBody::Versions(versions)) = reply.outcome else {
        panic!("a list of versions");
    };
    assert_eq!(versions[0].authors, ["Ada"]);
}

/// The y-protocols payload of a `SYNC` example in the spec.
fn sync_payload(blocks: &BTreeMap<String, Vec<u8>>, name: &str) -> Vec<u8> {
    match Frame::decode(&blocks[name], &Limits::default()) {
        Ok(Frame {
            message: Message::Sync(payload),
            ..
        }) => payload,
        other => panic!("{name}: expected a SYNC frame, got {other:?}"),
    }
}

fn apply(doc: &Doc, payload: &[u8]) {
    let update = match ysync::decode_sync(payload) {
        Ok(SyncPayload::Step2(update) | SyncPayload::Update(update)) => update,
        other => panic!("expected a step 2 or an update, got {other:?}"),
    };
    doc.transact_mut()
        .apply_update(update)
        .expect("update applies");
}

fn text(doc: &Doc) -> String {
    let content = doc.get_or_insert_text("content");
    content.get_string(&doc.transact())
}

#[test]
fn spec_has_exactly_the_known_examples() {
    let found: BTreeSet<String> = hex_blocks(&spec()).into_keys().collect();
    let known: BTreeSet<String> = frame_examples()
        .iter()
        .map(|(name, _)| *name)
        .chain(FRAGMENTED)
        .chain([WS_CLOSE, "digest-hello-world"])
        .map(String::from)
        .collect();
    let missing: Vec<_> = known.difference(&found).collect();
    let unknown: Vec<_> = found.difference(&known).collect();
    assert!(
        missing.is_empty(),
        "examples missing from the spec: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "hex blocks this test does not know: {unknown:?}"
    );
}

#[test]
fn frame_examples_decode_and_encode_exactly() {
    let blocks = hex_blocks(&spec());
    for (name, expected) in frame_examples() {
        let bytes = &blocks[name];
        let decoded = Frame::decode(bytes, &Limits::default())
            .unwrap_or_else(|err| panic!("{name}: does not decode: {err}"));
        assert_eq!(decoded, expected, "{name}: decodes to another frame");
        assert_eq!(&expected.encode(), bytes, "{name}: re-encodes differently");
    }
}

#[test]
fn sync_examples_carry_the_stated_document() {
    let blocks = hex_blocks(&spec());
    let payload = |name| sync_payload(&blocks, name);

    let Ok(SyncPayload::Step1(server_sv)) = ysync::decode_sync(&payload("sync-step1-server"))
    else {
        panic!("sync-step1-server is not a step 1");
    };
    assert_eq!(server_sv.len(), 1);
    assert_eq!(server_sv.get(&ClientID::new(1)), 5);
    let Ok(SyncPayload::Step1(client_sv)) = ysync::decode_sync(&payload("sync-step1-client"))
    else {
        panic!("sync-step1-client is not a step 1");
    };
    assert!(client_sv.is_empty());

    // Writes are the step 2s and updates: the client's step 2 is write 1, its update write 2.
    assert!(!ysync::is_write(&payload("sync-step1-client")));
    assert!(ysync::is_write(&payload("sync-step2-client")));
    assert!(ysync::is_write(&payload("sync-update")));

    // The server's step 2 gives the client "hello"; the client's own step 2, answering the
    // server's state vector, changes nothing; its update appends " world".
    let doc = Doc::new();
    apply(&doc, &payload("sync-step2-server"));
    assert_eq!(text(&doc), "hello");
    assert_eq!(doc.transact().state_vector(), server_sv);
    apply(&doc, &payload("sync-step2-client"));
    assert_eq!(text(&doc), "hello");
    apply(&doc, &payload("sync-update"));
    assert_eq!(text(&doc), "hello world");
}

#[test]
fn awareness_examples_carry_alice_then_her_removal() {
    let blocks = hex_blocks(&spec());
    let entries = |name: &str| match Frame::decode(&blocks[name], &Limits::default()) {
        Ok(Frame {
            message: Message::Awareness(body),
            ..
        }) => ysync::awareness_entries(&ysync::decode_awareness(&body).unwrap()),
        other => panic!("{name}: expected an AWARENESS frame, got {other:?}"),
    };
    let [(client, clock, json)] = entries("awareness").try_into().unwrap();
    assert_eq!((client, clock), (7, 1));
    let state: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(state["user"]["name"], "Alice");
    // The removal the server broadcasts: the same client, state null, clock + 1.
    assert_eq!(
        entries("awareness-removal"),
        vec![(7, 2, "null".to_owned())]
    );
}

#[test]
fn fragmented_example_is_what_the_encoder_emits_and_reassembles() {
    let blocks = hex_blocks(&spec());
    let frames: Vec<&Vec<u8>> = FRAGMENTED.iter().map(|name| &blocks[*name]).collect();

    let message = Message::Sync(golden("sync_update_delete"));
    let mut emitted = Vec::new();
    encode_fragmented(ChannelId(1), &message, TINY_FRAME, |f| emitted.push(f));
    assert_eq!(emitted.iter().collect::<Vec<_>>(), frames);

    let limits = Limits::default();
    let mut reassembler = Reassembler::default();
    let mut complete = Vec::new();
    for bytes in &frames {
        assert!(bytes.len() <= TINY_FRAME as usize);
        let frame = Frame::decode(bytes, &limits).unwrap();
        assert_eq!(frame.channel, ChannelId(1));
        let pushed = reassembler.push(frame.message, limits.max_message_size);
        complete.extend(pushed.unwrap());
    }
    assert_eq!(complete, vec![message.clone()]);

    // Applied after the earlier examples, the delete leaves "ello world".
    let doc = Doc::new();
    for name in ["sync-step2-server", "sync-update"] {
        apply(&doc, &sync_payload(&blocks, name));
    }
    let Message::Sync(payload) = message else {
        unreachable!()
    };
    apply(&doc, &payload);
    assert_eq!(text(&doc), "ello world");
}

#[test]
fn connection_close_example_is_code_then_reason() {
    let blocks = hex_blocks(&spec());
    let bytes = &blocks[WS_CLOSE];
    let code = u16::from_be_bytes([bytes[0], bytes[1]]);
    assert_eq!(CloseCode::from_u16(code), CloseCode::GoingAway);
    let reason = std::str::from_utf8(&bytes[2..]).unwrap();
    assert_eq!(reason, CloseCode::GoingAway.description());
}

/// `(code, reason text, reaction)` for each row of the spec's table under `heading`.
fn code_table(spec: &str, heading: &str) -> Vec<(u16, String, String)> {
    let section = spec.split(heading).nth(1).expect("heading present");
    let section = section.split("\n#").next().unwrap();
    let clean = |cell: &str| cell.trim().trim_matches('`').to_owned();
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').collect();
            let code = cells.get(1)?.trim().parse().ok()?;
            assert_eq!(cells.len(), 6, "row {code}: wrong number of columns");
            Some((code, clean(cells[2]), clean(cells[4])))
        })
        .collect()
}

fn row(code: u16, text: &str, reaction: Reaction) -> (u16, String, String) {
    (code, text.to_owned(), format!("{reaction:?}"))
}

#[test]
fn close_code_tables_match_the_crate() {
    let spec = spec();
    let connection: Vec<_> = CloseCode::ALL
        .iter()
        .map(|c| row(c.as_u16(), c.description(), c.reaction()))
        .collect();
    assert_eq!(code_table(&spec, "### 10.1 "), connection);
    let channel: Vec<_> = ChannelCode::ALL
        .iter()
        .map(|c| row(c.as_u16(), c.description(), c.reaction()))
        .collect();
    assert_eq!(code_table(&spec, "### 10.2 "), channel);
}

/// The §2.1 example request, with its token placeholder, as (request line, headers).
fn upgrade_example(spec: &str) -> (String, Vec<(String, String)>) {
    let section = spec.split("### 2.1 ").nth(1).expect("§2.1 present");
    let block = section.split("```").nth(1).expect("§2.1 has an example");
    let mut lines = block.lines().map(str::trim).filter(|l| !l.is_empty());
    let request_line = lines.next().expect("a request line").to_owned();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a header line");
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    (request_line, headers)
}

#[test]
fn upgrade_example_passes_the_check_and_its_http_1_0_form_does_not() {
    use quire_protocol::handshake::{check_upgrade, MISSING_HOST, NOT_HTTP_1_1, WS_PATH};
    let (request_line, headers) = upgrade_example(&spec());
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, path, version] = parts.as_slice() else {
        panic!("`{request_line}` is not METHOD PATH VERSION");
    };
    assert_eq!(*path, WS_PATH);
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let upgrade = check_upgrade(method, version, None, &pairs).expect("the example is accepted");
    assert_eq!(upgrade.token.as_deref(), Some("<token>"));
    assert_eq!(
        check_upgrade(method, "HTTP/1.0", None, &pairs),
        Err(NOT_HTTP_1_1)
    );
    let no_host: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
        .collect();
    assert_eq!(
        check_upgrade(method, version, None, &no_host),
        Err(MISSING_HOST)
    );
}

#[test]
fn refused_upgrade_table_names_every_refusal_status() {
    use quire_protocol::handshake::{
        FORBIDDEN, MISSING_HOST, NOT_HTTP_1_1, SHUTTING_DOWN, TOO_MANY_CONNECTIONS, UNAUTHORIZED,
    };
    let spec = spec();
    let section = spec.split("### 2.3 ").nth(1).expect("§2.3 present");
    let section = section.split("\n#").next().unwrap();
    let statuses: BTreeSet<u16> = section
        .lines()
        .filter_map(|line| {
            line.split('|')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    for refusal in [
        NOT_HTTP_1_1,
        MISSING_HOST,
        UNAUTHORIZED,
        FORBIDDEN,
        TOO_MANY_CONNECTIONS,
        SHUTTING_DOWN,
    ] {
        assert!(
            statuses.contains(&refusal.status),
            "§2.3 has no row for {refusal:?}"
        );
    }
    let row_400 = section
        .lines()
        .find(|line| line.starts_with("| 400 "))
        .expect("a 400 row");
    assert!(row_400.contains("HTTP/1.1") && row_400.contains("`Host`"));
}
