//! Hand-built updates for each field the walk reads. Every input the walk accepts is also
//! given to yrs, unguarded: it must decode without a panic (these tests run with debug
//! assertions and overflow checks on). Updates made by real yrs edits are checked in
//! tests/update_validation.rs.

use yrs::updates::decoder::Decode;
use yrs::Update;

use super::*;
use crate::varint::{write_string, write_varint};

const MAX_CLOCK: u32 = u32::MAX;

/// One client group of `structs` from `client` starting at `clock`, and an empty delete set.
fn update(client: u64, clock: u32, structs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![1];
    write_varint(&mut out, structs.len() as u64);
    write_varint(&mut out, client);
    write_varint(&mut out, clock.into());
    structs.iter().for_each(|s| out.extend_from_slice(s));
    out.push(0);
    out
}

/// An item in root type "r" (no origins) with `content_ref` and its encoded content.
fn root_item(content_ref: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![content_ref, 1];
    write_string(&mut out, "r");
    out.extend_from_slice(content);
    out
}

fn string(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_string(&mut out, text);
    out
}

fn var(value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    write_varint(&mut out, value);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The walk accepts `bytes`, and yrs decodes them without error or panic.
fn accepted(bytes: &[u8]) {
    if let Err(err) = validate_update_v1(bytes) {
        panic!("{bytes:02x?} refused: {err}");
    }
    if let Err(err) = Update::decode_v1(bytes) {
        panic!("{bytes:02x?} passes validation but yrs refuses it: {err}");
    }
    // Every proper prefix ends early, so it is refused.
    for end in 0..bytes.len() {
        assert!(
            validate_update_v1(&bytes[..end]).is_err(),
            "prefix {:02x?}",
            &bytes[..end]
        );
    }
}

fn refused(bytes: &[u8]) -> PayloadError {
    validate_update_v1(bytes).expect_err("accepted")
}

#[test]
fn every_content_type_is_walked_as_yrs_reads_it() {
    let nested = cat(&[&[any_tag::MAP], &var(2), &string("k"), &[any_tag::NULL]]);
    let nested = cat(&[&nested, &string("l"), &[any_tag::ARRAY, 1, any_tag::TRUE]]);
    let anys = cat(&[
        &var(12),
        &[
            any_tag::UNDEFINED,
            any_tag::NULL,
            any_tag::FALSE,
            any_tag::TRUE,
        ],
        &[any_tag::INTEGER, 0xc1, 0x01], // -65
        &[any_tag::FLOAT32, 0x3f, 0x80, 0, 0],
        &[
            any_tag::FLOAT64,
            0x40,
            0x09,
            0x21,
            0xfb,
            0x54,
            0x44,
            0x2d,
            0x18,
        ],
        &[
            any_tag::BIGINT,
            0x7f,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ],
        &[any_tag::STRING],
        &string("é😀"),
        &[any_tag::BUFFER, 2, 0xde, 0xad],
        &[any_tag::ARRAY, 0],
        &nested,
    ]);
    let items = [
        root_item(content::DELETED, &var(3)),
        root_item(content::BINARY, &[3, 1, 2, 3]),
        root_item(content::STRING, &string("hé😀")),
        root_item(content::EMBED, &string("{\"image\":[1,2]}")),
        root_item(content::FORMAT, &cat(&[&string("bold"), &string("true")])),
        root_item(content::ANY, &anys),
    ];
    for item in &items {
        accepted(&update(1, 0, std::slice::from_ref(item)));
    }
    accepted(&update(1, 5, &items));
}

#[test]
fn every_type_ref_is_walked_as_yrs_reads_it() {
    for tag in [
        type_ref::ARRAY,
        type_ref::MAP,
        type_ref::TEXT,
        type_ref::XML_FRAGMENT,
        // yrs reads no hook name (Yjs writes one): the next byte is the delete set.
        type_ref::XML_HOOK,
        type_ref::XML_TEXT,
        type_ref::SUB_DOC,
        type_ref::UNDEFINED,
    ] {
        accepted(&update(1, 0, &[root_item(content::TYPE, &[tag])]));
    }
    // Yjs writes an XmlHook's name after its type ref; yrs reads none and takes the name's
    // length for the delete set. This update, made by Yjs 13.6.33 (`map.set('hook',
    // new Y.XmlHook('my-hook'))`), is refused, as yrs itself fails on it.
    let yjs_hook = cat(&[
        &[1, 1, 1, 0x3d, HAS_PARENT_SUB | content::TYPE, 1],
        &string("m"),
    ]);
    let yjs_hook = cat(&[
        &yjs_hook,
        &string("hook"),
        &[type_ref::XML_HOOK],
        &string("my-hook"),
        &[0],
    ]);
    let from_yjs = "0101013d2701016d04686f6f6b05076d792d686f6f6b00";
    let hex: String = yjs_hook.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, from_yjs);
    assert!(validate_update_v1(&yjs_hook).is_err());
    assert!(Update::decode_v1(&yjs_hook).is_err());

    let element = cat(&[&[type_ref::XML_ELEMENT], &string("p")]);
    accepted(&update(1, 0, &[root_item(content::TYPE, &element)]));
    for tag in [7, 8, 10, 14, 16, 0x80] {
        assert_eq!(
            refused(&update(1, 0, &[root_item(content::TYPE, &[tag])])),
            PayloadError::UnknownTag {
                what: "type ref",
                tag
            }
        );
    }
}

#[test]
fn origins_parents_and_map_keys_follow_the_info_bits() {
    let id = |client: u64, clock: u64| cat(&[&var(client), &var(clock)]);
    let text = string("a");
    let structs = [
        // Left origin only; the parent is copied, so no parent info and no map key follow.
        cat(&[
            &[HAS_ORIGIN | HAS_PARENT_SUB | content::STRING],
            &id(1, 0),
            &text,
        ]),
        cat(&[&[HAS_RIGHT_ORIGIN | content::STRING], &id(2, 7), &text]),
        cat(&[
            &[HAS_ORIGIN | HAS_RIGHT_ORIGIN | 4],
            &id(1, 1),
            &id(2, 7),
            &text,
        ]),
        // Parent by ID, then by root name with a map key.
        cat(&[&[content::STRING, 0], &id(3, 4), &text]),
        cat(&[
            &[HAS_PARENT_SUB | content::ANY, 1],
            &string("m"),
            &string("k"),
            &[1, 126],
        ]),
        // Bit 4 is ignored by yrs: 0x14 is String content.
        cat(&[&[0x10 | content::STRING, 1], &string("r"), &text]),
        vec![INFO_GC, 3],
    ];
    // Client 1's structs start at clock 10: its origins at clocks 0 and 1 came before them.
    accepted(&update(1, 10, &structs));
    // A skip (a gap inside a merged update) is refused, whatever its length.
    for len in [0, 2] {
        assert_eq!(
            refused(&update(1, 10, &[vec![INFO_GC, 3], vec![INFO_SKIP, len]])),
            PayloadError::Unsupported("a skip struct (info 10)")
        );
    }

    let big = 1u64 << 53;
    for item in [
        cat(&[&[HAS_ORIGIN | content::STRING], &id(big, 0), &text]),
        cat(&[&[HAS_RIGHT_ORIGIN | content::STRING], &id(big, 0), &text]),
        cat(&[&[content::STRING, 0], &id(big, 0), &text]),
    ] {
        assert_eq!(
            refused(&update(1, 0, &[item])),
            PayloadError::ClientIdTooLarge(big)
        );
    }
    accepted(&update(big - 1, 0, &[root_item(content::STRING, &text)]));
}

#[test]
fn unknown_content_refs_are_refused() {
    for info in [HAS_ORIGIN, 0x10, 0x1a, 11, 12, 15, 0x2f] {
        let mut item = vec![info];
        if info & HAS_ORIGIN != 0 {
            item.extend_from_slice(&[1, 0]);
        } else {
            item.extend_from_slice(&[1, 1, b'r']);
            if info & HAS_PARENT_SUB != 0 {
                item.extend_from_slice(&[1, b'k']);
            }
        }
        assert_eq!(
            refused(&update(1, 5, &[item])),
            PayloadError::UnknownTag {
                what: "content",
                tag: info & CONTENT_REF_MASK
            },
            "info {info:#04x}"
        );
    }
    let bad_any = root_item(content::ANY, &[1, 115]);
    assert_eq!(
        refused(&update(1, 0, &[bad_any])),
        PayloadError::UnknownTag {
            what: "Any",
            tag: 115
        }
    );
}

#[test]
fn clocks_end_at_u32_max_and_count_utf16_units() {
    let gc = |len: u64| cat(&[&[INFO_GC], &var(len)]);
    accepted(&update(1, MAX_CLOCK - 2, &[gc(2)]));
    let overflow = PayloadError::ClockOverflow {
        client: 1,
        clock: MAX_CLOCK - 1,
        len: 2,
    };
    assert_eq!(refused(&update(1, MAX_CLOCK - 1, &[gc(2)])), overflow);

    // "é" is 2 UTF-8 bytes but 1 UTF-16 unit; "😀" is 4 bytes and 2 units.
    let text = |t: &str| root_item(content::STRING, &string(t));
    accepted(&update(1, MAX_CLOCK - 1, &[text("é")]));
    accepted(&update(1, MAX_CLOCK - 2, &[text("😀")]));
    assert_eq!(refused(&update(1, MAX_CLOCK - 1, &[text("😀")])), overflow);

    // Items of length 0 are dropped by yrs without advancing the clock.
    let empty = [
        text(""),
        root_item(content::DELETED, &[0]),
        root_item(8, &[0]),
    ];
    accepted(&update(1, MAX_CLOCK, &empty));

    assert_eq!(
        refused(&update(1, 0, &[gc(0)])),
        PayloadError::EmptyRange("GC struct")
    );
    // A clock that does not fit in 32 bits (yrs would wrap it).
    let mut wide = vec![1, 1, 1];
    write_varint(&mut wide, 1 << 32);
    wide.extend_from_slice(&[INFO_GC, 1, 0]);
    assert!(matches!(refused(&wide), PayloadError::Malformed(_)));
}

#[test]
fn delete_sets_are_checked() {
    let ds = |client: u64, clock: u32, len: u32| {
        cat(&[
            &[0, 1],
            &var(client),
            &[1],
            &var(clock.into()),
            &var(len.into()),
        ])
    };
    accepted(&ds(1, MAX_CLOCK - 1, 1));
    accepted(&cat(&[
        &[0, 2, 1, 2, 0, 1, 5, 3],
        &var((1 << 53) - 1),
        &[0],
    ]));
    assert_eq!(
        refused(&ds(1, MAX_CLOCK, 1)),
        PayloadError::ClockOverflow {
            client: 1,
            clock: MAX_CLOCK,
            len: 1
        }
    );
    assert_eq!(
        refused(&ds(1, 0, 0)),
        PayloadError::EmptyRange("delete range")
    );
    assert_eq!(
        refused(&ds(1 << 53, 0, 1)),
        PayloadError::ClientIdTooLarge(1 << 53)
    );
}

#[test]
fn counts_are_checked_against_the_bytes_left() {
    let implausible = |bytes: &[u8], claimed: u64| match refused(bytes) {
        PayloadError::ImplausibleCount { claimed: c, .. } => assert_eq!(c, claimed),
        other => panic!("{bytes:02x?}: {other:?}"),
    };
    let many = (1u64 << 28) - 1;
    implausible(&cat(&[&var(many), &[0; 16]]), many);
    implausible(&cat(&[&[1], &var(many), &[1, 0], &[0; 16]]), many);
    let item = |content_ref: u8, rest: &[u8]| update(1, 0, &[root_item(content_ref, rest)]);
    implausible(&item(content::ANY, &var(many)), many);
    implausible(
        &item(content::ANY, &cat(&[&[1, any_tag::MAP], &var(many)])),
        many,
    );
    implausible(
        &item(content::ANY, &cat(&[&[1, any_tag::ARRAY], &var(many)])),
        many,
    );
    implausible(&cat(&[&[0], &var(many), &[0; 8]]), many);
    implausible(&cat(&[&[0, 1, 1], &var(many), &[0; 8]]), many);

    // Lengths of strings and buffers are checked by reading them.
    let truncated = |bytes: &[u8]| assert!(matches!(refused(bytes), PayloadError::Malformed(_)));
    truncated(&item(content::STRING, &var(many)));
    truncated(&item(content::BINARY, &var(many)));
    truncated(&item(
        content::ANY,
        &cat(&[&[1, any_tag::STRING], &var(many)]),
    ));
    truncated(&item(
        content::ANY,
        &cat(&[&[1, any_tag::BUFFER], &var(many)]),
    ));
    truncated(&item(content::STRING, &[2, 0xff, 0xfe])); // not UTF-8
}

#[test]
fn nesting_is_bounded() {
    let arrays = |depth: usize| {
        let mut any = [any_tag::ARRAY, 1].repeat(depth);
        any[2 * depth - 1] = 0; // the innermost array is empty
        update(1, 0, &[root_item(content::ANY, &cat(&[&[1], &any]))])
    };
    accepted(&arrays(MAX_ANY_DEPTH));
    assert_eq!(
        refused(&arrays(MAX_ANY_DEPTH + 1)),
        PayloadError::TooDeep(MAX_ANY_DEPTH)
    );

    let json = |depth: usize| {
        let text = format!("{}\"]}}\\\"\"{}", "[".repeat(depth), "]".repeat(depth));
        update(1, 0, &[root_item(content::EMBED, &string(&text))])
    };
    // Brackets inside strings do not count.
    accepted(&json(MAX_ANY_DEPTH));
    assert_eq!(
        refused(&json(MAX_ANY_DEPTH + 1)),
        PayloadError::TooDeep(MAX_ANY_DEPTH)
    );
}

#[test]
fn any_integers_must_fit_in_64_bits() {
    let int = |bytes: &[u8]| update(1, 0, &[root_item(content::ANY, &cat(&[&[1, 125], bytes]))]);
    // 6 + 8 × 7 + 1 bits: magnitude 2^63 - 1, negative, in 10 bytes.
    let mut largest = vec![0xff];
    largest.extend_from_slice(&[0xff; 8]);
    largest.push(0x01);
    accepted(&int(&largest));
    let mut too_big = largest.clone();
    *too_big.last_mut().unwrap() = 0x02;
    assert!(matches!(
        refused(&int(&too_big)),
        PayloadError::Malformed(_)
    ));
    let mut eleven = largest;
    *eleven.last_mut().unwrap() = 0x81;
    eleven.push(0x00);
    assert!(matches!(refused(&int(&eleven)), PayloadError::Malformed(_)));
}

#[test]
fn trailing_bytes_are_refused() {
    accepted(&[0, 0]);
    assert_eq!(refused(&[0, 0, 0]), PayloadError::TrailingBytes(1));
    let mut bytes = update(1, 0, &[root_item(content::STRING, &string("x"))]);
    bytes.extend_from_slice(&[1, 2]);
    assert_eq!(refused(&bytes), PayloadError::TrailingBytes(2));
}

#[test]
fn legacy_json_content_is_refused() {
    // yrs would read two values for this count of 1 and write back a count of 2.
    let json = root_item(content::JSON, &cat(&[&var(1), &string("1"), &string("{}")]));
    assert!(matches!(
        refused(&update(1, 0, &[json])),
        PayloadError::Unsupported(_)
    ));
}

#[test]
fn an_item_cannot_refer_to_its_own_clients_later_clocks() {
    let id = |client: u64, clock: u64| cat(&[&var(client), &var(clock)]);
    let text = string("abc");
    let with_origin = |origin: Vec<u8>| cat(&[&[HAS_ORIGIN | content::STRING], &origin, &text]);
    let with_right = |right: Vec<u8>| cat(&[&[HAS_RIGHT_ORIGIN | content::STRING], &right, &text]);
    let with_parent = |parent: Vec<u8>| cat(&[&[content::STRING, 0], &parent, &text]);
    // The item is client 1's clocks 5..8.
    for item in [
        with_origin(id(1, 4)),
        with_right(id(1, 0)),
        with_parent(id(1, 4)),
        with_origin(id(2, 100)),
        with_right(id(2, 5)),
    ] {
        accepted(&update(1, 5, &[item]));
    }
    for (item, refers_to) in [
        (with_origin(id(1, 5)), 5),
        (with_origin(id(1, 12)), 12),
        (with_right(id(1, 6)), 6),
        (with_parent(id(1, 7)), 7),
    ] {
        assert_eq!(
            refused(&update(1, 5, &[item])),
            PayloadError::ImpossibleReference {
                client: 1,
                clock: 5,
                refers_to
            }
        );
    }
    // The second struct of a group starts where the first ended.
    let first = root_item(content::STRING, &string("ab"));
    assert_eq!(
        refused(&update(1, 5, &[first, with_origin(id(1, 7))])),
        PayloadError::ImpossibleReference {
            client: 1,
            clock: 7,
            refers_to: 7
        }
    );
}

#[test]
fn subdocuments_are_refused() {
    let options = cat(&[&[any_tag::MAP], &var(1), &string("gc"), &[any_tag::FALSE]]);
    let subdoc = root_item(content::DOC, &cat(&[&string("guid"), &options]));
    assert!(matches!(
        refused(&update(1, 0, &[subdoc])),
        PayloadError::Unsupported(_)
    ));
}

// ---- References ---------------------------------------------------------------------------

/// An item of one character whose origin is `origin` (client, clock).
fn item_after(origin: (u64, u32), text: &str) -> Vec<u8> {
    cat(&[
        &[0x80 | 4],
        &var(origin.0),
        &var(origin.1.into()),
        &string(text),
    ])
}

#[test]
fn references_to_another_client_and_deleted_ranges_are_listed() {
    // Client 5, clocks 3..5: one item after (9, 6), one after its own clock 3.
    let mut bytes = update(5, 3, &[item_after((9, 6), "a"), item_after((5, 3), "b")]);
    // Delete set: client 7, clock 10, length 2.
    bytes.pop();
    bytes.extend_from_slice(&[1, 7, 1, 10, 2]);
    accepted(&bytes);
    let references = walk_update_v1(&bytes).unwrap();
    let mut needs: Vec<_> = references.needs.iter().map(|(c, e)| (*c, *e)).collect();
    needs.sort_unstable();
    assert_eq!(
        needs,
        [(7, 12), (9, 7)],
        "own-client origins are not listed"
    );
    assert_eq!(references.holds.get(&5), Some(&5));
}

#[test]
fn a_reference_is_covered_by_the_receiver_or_by_the_update_itself() {
    // Client 2's item follows client 1's clock 4; the update also carries client 1's 0..3.
    let mut bytes = vec![2];
    for (client, structs) in [
        (1u64, vec![root_item(4, &string("abc"))]),
        (2, vec![item_after((1, 4), "x")]),
    ] {
        write_varint(&mut bytes, structs.len() as u64);
        write_varint(&mut bytes, client);
        write_varint(&mut bytes, 0);
        structs.iter().for_each(|s| bytes.extend_from_slice(s));
    }
    bytes.push(0);
    accepted(&bytes);
    let references = walk_update_v1(&bytes).unwrap();
    // Needs clocks 0..5 of client 1; the update carries 0..3.
    assert_eq!(references.first_missing(|_| 0), Some((1, 5)));
    assert_eq!(
        references.first_missing(|c| if c == 1 { 4 } else { 0 }),
        Some((1, 5))
    );
    assert_eq!(
        references.first_missing(|c| if c == 1 { 5 } else { 0 }),
        None
    );
    // Referring only within the update is enough.
    let own = update(
        3,
        0,
        &[root_item(4, &string("ab")), item_after((3, 1), "c")],
    );
    assert_eq!(walk_update_v1(&own).unwrap().first_missing(|_| 0), None);
}
