//! Updates made by real yrs edits always pass `ysync::validate_update_v1` and decode through
//! `ysync::decode_update`: random plans of text edits (multi-byte and astral characters,
//! formatting), embeds, maps holding `Any` values of every kind and nested types, arrays and XML
//! fragments, on three documents that sync with each other (subdocuments, which the validator
//! refuses, are checked on their own). Every update a
//! transaction emits is checked, as are the step-2 diffs that sync the documents, each
//! document's full state, and merges of the emitted updates (which hold skip structs).
//!
//! The seed is fixed so runs repeat; set `PROPTEST_RNG_SEED` to explore others (it is printed
//! with any failure) and `PROPTEST_CASES` to run more cases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::RngSeed;
use quire_protocol::yrs::encoding::read;
use quire_protocol::yrs::types::Attrs;
use quire_protocol::yrs::updates::decoder::Decode;
use quire_protocol::yrs::{
    merge_updates_v1, Any, Array, ArrayPrelim, ClientID, Doc, GetString, Map, MapPrelim, Number,
    OffsetKind, Options, ReadTxn, StateVector, Text, TextPrelim, Transact, Update,
    XmlElementPrelim, XmlFragment, XmlTextPrelim,
};
use quire_protocol::ysync::{self, validate_update_v1, SyncPayload, MAX_ANY_DEPTH};
use quire_protocol::PayloadError;

/// "QUIRE" in ASCII; the seed unless `PROPTEST_RNG_SEED` names another.
const DEFAULT_SEED: u64 = 0x51_55_49_52_45;

/// The documents of a plan: the smallest and largest 53-bit client IDs, and both offset kinds.
const DOCS: [(u64, OffsetKind); 3] = [
    (1, OffsetKind::Bytes),
    ((1 << 53) - 1, OffsetKind::Utf16),
    (0xfff_ffff, OffsetKind::Bytes),
];

fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    config.failure_persistence = None;
    eprintln!(
        "proptest seed {} (replay with PROPTEST_RNG_SEED={0})",
        config.rng_seed
    );
    config
}

// ---- Plans --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    TextInsert {
        at: u32,
        text: String,
        bold: bool,
    },
    TextDelete {
        at: u32,
        len: u32,
    },
    TextFormat {
        at: u32,
        len: u32,
        key: &'static str,
        value: Any,
    },
    Embed {
        at_end: bool,
        value: Any,
    },
    MapSet {
        key: String,
        value: Any,
    },
    MapNested {
        key: String,
        kind: u8,
        text: String,
    },
    MapRemove {
        key: String,
    },
    ArrayInsert {
        at: u32,
        values: Vec<Any>,
    },
    ArrayDelete {
        at: u32,
        len: u32,
    },
    XmlElement {
        at: u32,
        tag: String,
        attr: String,
        text: String,
    },
    XmlText {
        at: u32,
        text: String,
        value: Any,
    },
    /// Sends everything the target lacks to it, as a step 2 would.
    Sync {
        to: usize,
    },
}

/// Text mixing ASCII, 2- and 3-byte characters, astral emoji (2 UTF-16 units, 4 bytes) and
/// multi-code-point emoji, and anything else.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z ]{1,6}", "[é漢😀👍🏽🇫🇷\n]{1,4}", "(?s).{1,4}",]
}

fn key() -> impl Strategy<Value = String> {
    select(vec!["a", "b", "é", "😀", "a long key"]).prop_map(str::to_owned)
}

/// `Any` values of every kind, nested a few levels.
fn any_value() -> impl Strategy<Value = Any> {
    let leaf = prop_oneof![
        Just(Any::Null),
        Just(Any::Undefined),
        any::<bool>().prop_map(Any::Bool),
        any::<i64>().prop_map(|n| Any::Number(Number::Int(n))),
        prop_oneof![Just(0x7fff_ffff), Just(-0x7fff_ffff), Just(1 << 40)]
            .prop_map(|n| Any::Number(Number::Int(n))),
        any::<f64>().prop_map(|f| Any::Number(Number::Float(f))),
        any::<f32>().prop_map(|f| Any::Number(Number::Float(f.into()))),
        text().prop_map(|s| Any::String(s.into())),
        vec(any::<u8>(), 0..8).prop_map(|b| Any::Buffer(b.into())),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|v| Any::Array(v.into())),
            vec((key(), inner), 0..4).prop_map(|kv| Any::Map(Arc::new(kv.into_iter().collect()))),
        ]
    })
}

/// Values that survive the JSON that embeds and formatting attributes are written as.
fn json_value() -> impl Strategy<Value = Any> {
    let leaf = prop_oneof![
        Just(Any::Null),
        any::<bool>().prop_map(Any::Bool),
        (-(1i64 << 53)..(1i64 << 53)).prop_map(|n| Any::Number(Number::Int(n))),
        (-1e9f64..1e9).prop_map(|f| Any::Number(Number::Float(f))),
        text().prop_map(|s| Any::String(s.into())),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(|v| Any::Array(v.into())),
            vec((key(), inner), 0..3).prop_map(|kv| Any::Map(Arc::new(kv.into_iter().collect()))),
        ]
    })
}

fn op() -> impl Strategy<Value = Op> {
    let at = any::<u32>();
    prop_oneof![
        4 => (at, text(), any::<bool>())
            .prop_map(|(at, text, bold)| Op::TextInsert { at, text, bold }),
        2 => (at, 1u32..6).prop_map(|(at, len)| Op::TextDelete { at, len }),
        2 => (at, 1u32..6, select(vec!["bold", "href", "color"]), json_value())
            .prop_map(|(at, len, key, value)| Op::TextFormat { at, len, key, value }),
        1 => (any::<bool>(), json_value()).prop_map(|(at_end, value)| Op::Embed { at_end, value }),
        3 => (key(), any_value()).prop_map(|(key, value)| Op::MapSet { key, value }),
        1 => (key(), 0u8..3, text())
            .prop_map(|(key, kind, text)| Op::MapNested { key, kind, text }),
        1 => key().prop_map(|key| Op::MapRemove { key }),
        2 => (at, vec(any_value(), 1..4)).prop_map(|(at, values)| Op::ArrayInsert { at, values }),
        1 => (at, 1u32..4).prop_map(|(at, len)| Op::ArrayDelete { at, len }),
        1 => (at, select(vec!["p", "h1", "li", "élément"]), text(), text())
            .prop_map(|(at, tag, attr, text)| Op::XmlElement { at, tag: tag.into(), attr, text }),
        1 => (at, text(), json_value()).prop_map(|(at, text, value)| Op::XmlText { at, text, value }),
        3 => (0..DOCS.len()).prop_map(|to| Op::Sync { to }),
    ]
}

/// A plan: which document runs each operation.
fn plan() -> impl Strategy<Value = Vec<(usize, Op)>> {
    vec((0..DOCS.len(), op()), 1..40)
}

// ---- Running a plan -----------------------------------------------------------------------

/// The offset of the `chars`-th character boundary of `text` (clamped), in `kind` units.
fn offset(text: &str, chars: usize, kind: OffsetKind) -> u32 {
    let units = text.chars().take(chars).map(|c| match kind {
        OffsetKind::Bytes => c.len_utf8(),
        OffsetKind::Utf16 => c.len_utf16(),
    });
    units.sum::<usize>() as u32
}

fn attrs(key: &str, value: Any) -> Attrs {
    HashMap::from([(Arc::from(key), value)])
}

fn run(doc: &Doc, kind: OffsetKind, op: &Op) {
    let text_ref = doc.get_or_insert_text("t");
    let embeds = doc.get_or_insert_text("e");
    let map = doc.get_or_insert_map("m");
    let array = doc.get_or_insert_array("a");
    let xml = doc.get_or_insert_xml_fragment("x");
    let mut txn = doc.transact_mut();
    match op.clone() {
        Op::TextInsert { at, text, bold } => {
            let current = text_ref.get_string(&txn);
            let chars = current.chars().count();
            let index = offset(&current, at as usize % (chars + 1), kind);
            if bold {
                text_ref.insert_with_attributes(&mut txn, index, &text, attrs("bold", true.into()));
            } else {
                text_ref.insert(&mut txn, index, &text);
            }
        }
        Op::TextDelete { at, len } | Op::TextFormat { at, len, .. } => {
            let current = text_ref.get_string(&txn);
            let chars = current.chars().count();
            if chars == 0 {
                return;
            }
            let start = at as usize % chars;
            let end = (start + len as usize).min(chars);
            let index = offset(&current, start, kind);
            let len = offset(&current, end, kind) - index;
            if let Op::TextFormat { key, value, .. } = op.clone() {
                text_ref.format(&mut txn, index, len, attrs(key, value));
            } else {
                text_ref.remove_range(&mut txn, index, len);
            }
        }
        Op::Embed { at_end, value } => {
            let index = if at_end { embeds.len(&txn) } else { 0 };
            embeds.insert_embed(&mut txn, index, value);
        }
        Op::MapSet { key, value } => {
            map.insert(&mut txn, key, value);
        }
        Op::MapNested { key, kind, text } => match kind {
            0 => {
                map.insert(&mut txn, key, TextPrelim::new(text));
            }
            1 => {
                map.insert(&mut txn, key, ArrayPrelim::from([Any::from(text)]));
            }
            _ => {
                map.insert(&mut txn, key, MapPrelim::from([("k", Any::from(text))]));
            }
        },
        Op::MapRemove { key } => {
            map.remove(&mut txn, &key);
        }
        Op::ArrayInsert { at, values } => {
            let index = at % (array.len(&txn) + 1);
            array.insert_range(&mut txn, index, values);
        }
        Op::ArrayDelete { at, len } => {
            let current = array.len(&txn);
            if current > 0 {
                let index = at % current;
                array.remove_range(&mut txn, index, len.min(current - index));
            }
        }
        Op::XmlElement {
            at,
            tag,
            attr,
            text,
        } => {
            let index = at % (xml.len(&txn) + 1);
            let mut element =
                XmlElementPrelim::new(tag.as_str(), [XmlTextPrelim::new(text).into()]);
            element.attributes.insert("title".into(), attr);
            xml.insert(&mut txn, index, element);
        }
        Op::XmlText { at, text, value } => {
            let index = at % (xml.len(&txn) + 1);
            let node = xml.insert(&mut txn, index, XmlTextPrelim::new(""));
            node.insert_with_attributes(&mut txn, 0, &text, attrs("em", value));
        }
        Op::Sync { .. } => unreachable!("handled by the caller"),
    }
}

/// The update passes validation and decodes through `decode_update`, also inside a step 2.
fn check(what: &str, update: &[u8]) -> Result<(), TestCaseError> {
    let hex = || {
        update
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    if let Err(err) = validate_update_v1(update) {
        return Err(TestCaseError::fail(format!(
            "{what} refused: {err}\n{}",
            hex()
        )));
    }
    if let Err(err) = ysync::decode_update(update) {
        return Err(TestCaseError::fail(format!(
            "{what} undecodable: {err}\n{}",
            hex()
        )));
    }
    let step2 = ysync::encode_step2(update.to_vec());
    prop_assert!(matches!(
        ysync::decode_sync(&step2),
        Ok(SyncPayload::Step2(_))
    ));
    Ok(())
}

/// Sends `to` everything `from` has that `to` lacks, through `decode_update`.
fn sync(from: &Doc, to: &Doc) -> Result<(), TestCaseError> {
    let state_vector = to.transact().state_vector();
    let diff = from.transact().encode_state_as_update_v1(&state_vector);
    check("step 2 diff", &diff)?;
    let update = ysync::decode_update(&diff).unwrap();
    to.transact_mut()
        .apply_update(update)
        .map_err(|err| TestCaseError::fail(format!("applying a diff: {err}")))
}

fn full_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn updates_from_real_edits_validate(plan in plan()) {
        let emitted = Arc::new(Mutex::new(Vec::new()));
        let docs: Vec<Doc> = DOCS
            .iter()
            .map(|&(client, offset_kind)| {
                let doc = Doc::with_options(Options {
                    client_id: ClientID::new(client),
                    offset_kind,
                    ..Options::default()
                });
                let sink = Arc::clone(&emitted);
                doc.observe_update_v1("check", move |_, event| {
                    sink.lock().unwrap().push(event.update.clone());
                })
                .unwrap();
                doc
            })
            .collect();

        for (index, op) in &plan {
            match op {
                Op::Sync { to } if to == index => {}
                Op::Sync { to } => sync(&docs[*index], &docs[*to])?,
                op => run(&docs[*index], DOCS[*index].1, op),
            }
            for update in emitted.lock().unwrap().iter() {
                check("transaction update", update)?;
            }
        }

        // Everyone syncs with everyone; the documents converge.
        for from in &docs {
            for to in &docs {
                if !std::ptr::eq(from, to) {
                    sync(from, to)?;
                }
            }
        }
        let states: Vec<Vec<u8>> = docs.iter().map(full_state).collect();
        for state in &states {
            check("full state", state)?;
        }
        // (XML strings list attributes in hash order, so only the text is compared.)
        let text = |doc: &Doc| doc.get_or_insert_text("t").get_string(&doc.transact());
        let state_vector = |doc: &Doc| doc.transact().state_vector();
        for doc in &docs[1..] {
            prop_assert_eq!(text(doc), text(&docs[0]));
            prop_assert_eq!(state_vector(doc), state_vector(&docs[0]));
        }

        // Merges, of everything and of every other update. Gaps make skip structs, which
        // the protocol refuses (PROTOCOL §6.8); a gappy merge without one must pass.
        let emitted = emitted.lock().unwrap().clone();
        let merged = merge_updates_v1(&emitted).unwrap();
        check("merge of all updates", &merged)?;
        let gappy = merge_updates_v1(emitted.iter().step_by(2)).unwrap();
        match quire_protocol::ysync::validate_update_v1(&gappy) {
            Err(quire_protocol::PayloadError::Unsupported(what)) if what.contains("skip") => {}
            _ => check("merge of every other update", &gappy)?,
        }

        // The merge, applied to a fresh document, gives the same text.
        let fresh = Doc::new();
        fresh.transact_mut().apply_update(ysync::decode_update(&merged).unwrap()).unwrap();
        prop_assert_eq!(text(&fresh), text(&docs[0]));
    }
}

/// How to damage a valid update.
#[derive(Debug, Clone)]
enum Mutation {
    Set { at: usize, byte: u8 },
    Flip { at: usize, bit: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (
            at,
            prop_oneof![any::<u8>(), select(vec![0x00, 0x7f, 0x80, 0xff])]
        )
            .prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (at, 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (at, vec(prop_oneof![any::<u8>(), Just(0xff)], 1..6))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (at, 1usize..4).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match mutation {
        Mutation::Set { at, byte } => {
            let at = at % bytes.len();
            bytes[at] = *byte;
        }
        Mutation::Flip { at, bit } => {
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
        }
        Mutation::Insert { at, bytes: new } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % bytes.len();
            let end = (at + len).min(bytes.len());
            bytes.drain(at..end);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Damaged real updates are refused or decoded, and never reach a panic inside yrs
    /// (these tests run yrs with debug assertions and overflow checks on); whatever the walk
    /// accepts, yrs decodes.
    #[test]
    fn damaged_updates_never_reach_a_panic_in_yrs(
        plan in vec((0..DOCS.len(), op()), 1..12),
        mutations in vec(mutation(), 1..4),
    ) {
        let doc = Doc::with_options(Options {
            client_id: ClientID::new(DOCS[1].0),
            ..Options::default()
        });
        for (_, op) in plan.iter().filter(|(_, op)| !matches!(op, Op::Sync { .. })) {
            run(&doc, OffsetKind::Bytes, op);
        }
        let mut bytes = full_state(&doc);
        for mutation in &mutations {
            mutate(&mut bytes, mutation);
        }
        // What the walk accepts, yrs decodes (the walk reads exactly what yrs reads).
        if validate_update_v1(&bytes).is_ok() {
            match Update::decode_v1(&bytes) {
                Ok(_) | Err(read::Error::InvalidJSON(_)) => {}
                Err(err) => prop_assert!(false, "validated, yet yrs refuses it: {err}"),
            }
        }
        if let Err(err) = ysync::decode_update(&bytes) {
            prop_assert_ne!(err, PayloadError::DecoderPanicked);
        }
    }
}

/// yrs writes `Any` values nested as deep as it is given; the walk accepts
/// [`MAX_ANY_DEPTH`] levels and refuses one more.
#[test]
fn any_nesting_limit_against_yrs_encodings() {
    let nested = |depth: usize| {
        (0..depth).fold(Any::Null, |inner, level| {
            if level % 2 == 0 {
                Any::Array(vec![inner].into())
            } else {
                Any::Map(Arc::new(HashMap::from([("k".to_owned(), inner)])))
            }
        })
    };
    for (depth, ok) in [(MAX_ANY_DEPTH, true), (MAX_ANY_DEPTH + 1, false)] {
        let doc = Doc::with_client_id(1);
        let map = doc.get_or_insert_map("m");
        map.insert(&mut doc.transact_mut(), "deep", nested(depth));
        let state = full_state(&doc);
        match validate_update_v1(&state) {
            Ok(()) => assert!(ok, "depth {depth} accepted"),
            Err(err) => {
                assert!(!ok, "depth {depth}: {err}");
                assert_eq!(err, PayloadError::TooDeep(MAX_ANY_DEPTH));
            }
        }
    }
}

#[test]
fn a_real_subdocument_is_refused() {
    let doc = Doc::with_client_id(1);
    let map = doc.get_or_insert_map("m");
    let mut txn = doc.transact_mut();
    let options = Options {
        guid: "sub".into(),
        ..Options::default()
    };
    map.insert(&mut txn, "doc", Doc::with_options(options));
    let update = txn.encode_update_v1();
    assert!(matches!(
        ysync::validate_update_v1(&update),
        Err(PayloadError::Unsupported(_))
    ));
}
