//! Golden y-protocols vectors made by the JavaScript reference (yjs + y-protocols, see
//! tests/vectors/README.md), checked in both directions:
//!
//! - JS → Rust: every entry of `ysync.json` decodes with `quire_protocol::ysync` and with yrs's
//!   own y-sync decoder, re-encodes to the same bytes, and carries the recorded facts (state
//!   vectors, text after replaying the update chain, awareness client, clock and state).
//! - Rust → JS: a yrs `Doc` making the same edits as `make-vectors.mjs`, with the same client
//!   IDs, emits the same bytes the JS library did, so a Y.Doc accepts what Quire sends.
//!
//! Every entry must be covered: an entry whose name matches no known family fails the test, so
//! regenerating the file with new vectors forces this test to learn them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use quire_protocol::yrs;
use quire_protocol::ysync::{self, SyncPayload};
use serde_json::Value;
use yrs::sync::SyncMessage;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

const VECTORS_JSON: &str = include_str!("vectors/ysync.json");

/// The name of the one shared type every vector edits.
const TEXT_NAME: &str = "content";

/// The `applies_to` value naming a fresh, empty document.
const EMPTY: &str = "empty";

/// The family an entry belongs to, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `sync_step1_*`: a SyncStep1 with a recorded `state_vector`.
    Step1,
    /// `sync_step2_*`: a SyncStep2, one link of the update chain.
    Step2,
    /// `sync_update_*`: an Update, one link of the update chain.
    Update,
    /// `awareness_*`: a one-client awareness update.
    Awareness,
}

impl Family {
    fn of(name: &str) -> Family {
        if name.starts_with("sync_step1_") {
            Family::Step1
        } else if name.starts_with("sync_step2_") {
            Family::Step2
        } else if name.starts_with("sync_update_") {
            Family::Update
        } else if name.starts_with("awareness_") {
            Family::Awareness
        } else {
            panic!("vector `{name}` belongs to no known family; teach golden_vectors.rs about it")
        }
    }
}

/// One vector: its name, bytes and the facts recorded beside them.
#[derive(Debug)]
struct Vector {
    name: String,
    family: Family,
    bytes: Vec<u8>,
    fields: serde_json::Map<String, Value>,
}

impl Vector {
    fn str_field(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: missing string field `{key}`", self.name))
    }

    fn u64_field(&self, key: &str) -> u64 {
        self.fields
            .get(key)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{}: missing integer field `{key}`", self.name))
    }

    fn field(&self, key: &str) -> &Value {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("{}: missing field `{key}`", self.name))
    }
}

/// Every object-valued top-level entry of `ysync.json`, ordered by name. Scalar entries
/// (`generated_by`, the library versions) are metadata and skipped.
fn load_vectors() -> Vec<Vector> {
    let root: Value = serde_json::from_str(VECTORS_JSON).expect("ysync.json is valid JSON");
    let root = root.as_object().expect("ysync.json holds an object");
    let vectors: Vec<Vector> = root
        .iter()
        .filter_map(|(name, value)| {
            let fields = value.as_object()?.clone();
            let hex = fields
                .get("hex")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{name}: missing `hex`"));
            Some(Vector {
                name: name.clone(),
                family: Family::of(name),
                bytes: decode_hex(hex).unwrap_or_else(|err| panic!("{name}: {err}")),
                fields,
            })
        })
        .collect();
    assert!(!vectors.is_empty(), "ysync.json holds no vectors");
    vectors
}

fn vector<'v>(vectors: &'v [Vector], name: &str) -> &'v Vector {
    vectors
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("ysync.json has no vector `{name}`"))
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() % 2 != 0 {
        return Err(format!("odd-length hex string of {} digits", hex.len()));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16).map_err(|err| format!("bad hex at {i}: {err}"))
        })
        .collect()
}

/// A state vector as `client → clock`, ordered, for comparing with the recorded JSON.
fn state_vector_map(sv: &StateVector) -> BTreeMap<u64, u32> {
    sv.iter()
        .map(|(client, clock)| (client.get(), *clock))
        .collect()
}

fn recorded_state_vector(vector: &Vector) -> BTreeMap<u64, u32> {
    vector
        .field("state_vector")
        .as_object()
        .unwrap_or_else(|| panic!("{}: `state_vector` is not an object", vector.name))
        .iter()
        .map(|(client, clock)| {
            let client = client.parse().expect("client IDs are decimal strings");
            let clock = clock
                .as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .expect("clocks are u32");
            (client, clock)
        })
        .collect()
}

fn text_of(doc: &Doc) -> String {
    let text = doc.get_or_insert_text(TEXT_NAME);
    let txn = doc.transact();
    text.get_string(&txn)
}

/// Checks one sync vector against both decoders and returns quire's decoding.
fn check_sync(vector: &Vector) -> SyncPayload {
    let name = &vector.name;
    let ours = ysync::decode_sync(&vector.bytes)
        .unwrap_or_else(|err| panic!("{name}: quire-protocol refuses it: {err}"));
    let theirs = SyncMessage::decode_v1(&vector.bytes)
        .unwrap_or_else(|err| panic!("{name}: yrs refuses it: {err}"));
    assert_eq!(
        theirs.encode_v1(),
        vector.bytes,
        "{name}: yrs re-encodes it differently"
    );
    assert_eq!(
        ours.is_write(),
        ysync::is_write(&vector.bytes),
        "{name}: is_write disagrees with the decoded payload"
    );

    match (&ours, &theirs, vector.family) {
        (SyncPayload::Step1(sv), SyncMessage::SyncStep1(their_sv), Family::Step1) => {
            assert_eq!(sv, their_sv, "{name}: the two decoders disagree");
            assert_eq!(
                state_vector_map(sv),
                recorded_state_vector(vector),
                "{name}: state vector"
            );
            // yrs writes a state vector in hash-map order, so the bytes are only fixed for
            // at most one client; with more, compare what they decode to.
            let again = ysync::encode_step1(sv);
            if sv.len() <= 1 {
                assert_eq!(again, vector.bytes, "{name}: encode_step1");
            } else {
                match ysync::decode_sync(&again) {
                    Ok(SyncPayload::Step1(back)) => assert_eq!(&back, sv, "{name}"),
                    other => panic!("{name}: encode_step1 output decodes to {other:?}"),
                }
            }
        }
        (SyncPayload::Step2(update), SyncMessage::SyncStep2(body), Family::Step2) => {
            assert_eq!(ysync::encode_step2(body.clone()), vector.bytes, "{name}");
            check_update_body(name, update, body);
        }
        (SyncPayload::Update(update), SyncMessage::Update(body), Family::Update) => {
            assert_eq!(ysync::encode_update(body.clone()), vector.bytes, "{name}");
            check_update_body(name, update, body);
        }
        (ours, theirs, family) => {
            panic!("{name}: named as {family:?}, quire decodes {ours:?}, yrs decodes {theirs:?}")
        }
    }
    ours
}

/// The update quire decoded is the one yrs decodes from the same body, and yrs writes it back
/// byte for byte (these single-client updates have one canonical v1 encoding).
fn check_update_body(name: &str, update: &Update, body: &[u8]) {
    let direct = ysync::decode_update(body).expect("the body decodes on its own");
    assert_eq!(&direct, update, "{name}: decode_update vs decode_sync");
    assert_eq!(
        update.encode_v1(),
        body,
        "{name}: yrs re-encodes the update differently"
    );
}

/// Applies the chain of updates that ends at `last`, one step at a time, on a fresh doc,
/// checking the text after each step.
fn replay_chain(vectors: &[Vector], last: &Vector) {
    let mut path = vec![last];
    let mut current = last;
    loop {
        let parent = current.str_field("applies_to");
        if parent == EMPTY {
            break;
        }
        assert!(
            path.len() <= vectors.len(),
            "{}: `applies_to` loops",
            last.name
        );
        current = vector(vectors, parent);
        assert!(
            matches!(current.family, Family::Step2 | Family::Update),
            "{}: applies to `{parent}`, which is not a step 2 or update",
            last.name
        );
        path.push(current);
    }
    path.reverse();

    let doc = Doc::with_client_id(99);
    doc.get_or_insert_text(TEXT_NAME);
    for step in path {
        let update = match ysync::decode_sync(&step.bytes) {
            Ok(SyncPayload::Step2(update) | SyncPayload::Update(update)) => update,
            other => panic!("{}: not an update: {other:?}", step.name),
        };
        doc.transact_mut()
            .apply_update(update)
            .unwrap_or_else(|err| panic!("{}: does not apply: {err}", step.name));
        assert_eq!(
            text_of(&doc),
            step.str_field("text_after"),
            "text after {} (replaying towards {})",
            step.name,
            last.name
        );
        let txn = doc.transact();
        assert!(
            txn.store().pending_update().is_none(),
            "{}: has missing dependencies",
            step.name
        );
    }
}

fn check_awareness(vector: &Vector) {
    let name = &vector.name;
    let update = ysync::decode_awareness(&vector.bytes)
        .unwrap_or_else(|err| panic!("{name}: quire-protocol refuses it: {err}"));
    let entries = ysync::awareness_entries(&update);
    let [(client_id, clock, json)] = entries.as_slice() else {
        panic!("{name}: expected exactly one client, got {entries:?}");
    };
    assert_eq!(
        *client_id,
        vector.u64_field("client_id"),
        "{name}: client_id"
    );
    assert_eq!(
        u64::from(*clock),
        vector.u64_field("clock"),
        "{name}: clock"
    );
    let state: Value = serde_json::from_str(json)
        .unwrap_or_else(|err| panic!("{name}: state is not JSON ({err}): {json}"));
    assert_eq!(&state, vector.field("state"), "{name}: state");
    // One client leaves yrs no ordering choice, so the encoding is fixed.
    assert_eq!(update.encode_v1(), vector.bytes, "{name}: re-encoding");
}

#[test]
fn every_vector_decodes_and_reencodes() {
    let vectors = load_vectors();
    let mut seen = BTreeSet::new();
    for vector in &vectors {
        match vector.family {
            Family::Step1 | Family::Step2 | Family::Update => {
                check_sync(vector);
            }
            Family::Awareness => check_awareness(vector),
        }
        seen.insert(vector.name.as_str());
    }
    assert_eq!(seen.len(), vectors.len(), "duplicate vector names");
}

#[test]
fn update_chain_replays_to_the_recorded_text() {
    let vectors = load_vectors();
    let links: Vec<&Vector> = vectors
        .iter()
        .filter(|v| matches!(v.family, Family::Step2 | Family::Update))
        .collect();
    assert!(!links.is_empty(), "no step 2 or update vectors");
    for link in links {
        replay_chain(&vectors, link);
    }
}

/// Collects the v1 update of every transaction committed on `doc`.
fn record_updates(doc: &Doc) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let updates = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&updates);
    doc.observe_update_v1("golden-test", move |_, event| {
        sink.lock().unwrap().push(event.update.clone());
    })
    .expect("no transaction is open");
    updates
}

/// The one update the last transaction emitted.
fn take_update(updates: &Mutex<Vec<Vec<u8>>>) -> Vec<u8> {
    let mut updates = updates.lock().unwrap();
    assert_eq!(updates.len(), 1, "expected exactly one update");
    updates.pop().unwrap()
}

/// Rust → JS: yrs, making the edits `make-vectors.mjs` makes with the same client IDs, writes
/// the bytes the JavaScript library wrote. Byte equality is stronger than "Y.Doc accepts it":
/// the JS script already checked that a Y.Doc applies these exact bytes.
#[test]
fn yrs_writes_what_yjs_wrote() {
    let vectors = load_vectors();
    let expect = |name: &str, bytes: Vec<u8>| {
        assert_eq!(
            bytes,
            vector(&vectors, name).bytes,
            "yrs and yjs disagree on `{name}`"
        );
    };

    // sync_step1_empty: client 3's empty doc.
    let empty = Doc::with_client_id(3);
    expect(
        "sync_step1_empty",
        ysync::encode_step1(&empty.transact().state_vector()),
    );

    // Client 1 writes "hello" in one transaction.
    let doc1 = Doc::with_client_id(1);
    let text1 = doc1.get_or_insert_text(TEXT_NAME);
    text1.insert(&mut doc1.transact_mut(), 0, "hello");
    expect(
        "sync_step1_text",
        ysync::encode_step1(&doc1.transact().state_vector()),
    );

    // sync_step2_text: the answer to an empty state vector (client 4's fresh doc).
    let empty_sv = Doc::with_client_id(4).transact().state_vector();
    expect(
        "sync_step2_text",
        ysync::encode_step2(doc1.transact().encode_state_as_update_v1(&empty_sv)),
    );

    // The live updates, captured per transaction as y-websocket would send them.
    let updates1 = record_updates(&doc1);
    text1.insert(&mut doc1.transact_mut(), 5, " world");
    expect(
        "sync_update_insert",
        ysync::encode_update(take_update(&updates1)),
    );
    text1.remove_range(&mut doc1.transact_mut(), 0, 1);
    expect(
        "sync_update_delete",
        ysync::encode_update(take_update(&updates1)),
    );

    // Client 2 syncs with client 1's state, then inserts "X" at the front.
    let doc2 = Doc::with_client_id(2);
    let text2 = doc2.get_or_insert_text(TEXT_NAME);
    let state1 = doc1
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    doc2.transact_mut()
        .apply_update(Update::decode_v1(&state1).unwrap())
        .unwrap();
    let updates2 = record_updates(&doc2);
    text2.insert(&mut doc2.transact_mut(), 0, "X");
    expect(
        "sync_update_two_clients",
        ysync::encode_update(take_update(&updates2)),
    );
    assert_eq!(text_of(&doc2), "Xello world");
}
