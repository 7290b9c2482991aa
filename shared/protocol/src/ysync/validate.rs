//! A structural walk of a Yjs v1 update that reads exactly the fields yrs 0.28.1's
//! `Update::decode_v1` reads, in the same order and with the same widths, and refuses every
//! input on which yrs would reserve memory the bytes cannot justify, overflow a clock, trip a
//! debug assertion or recurse without bound. It allocates nothing: strings are borrowed from
//! the input and every count is checked against the bytes left before its elements are
//! walked, so validating costs one pass over the bytes whatever they claim.
//!
//! The layout (yrs `update.rs` `impl Decode for Update`, `block.rs` `ItemContent::decode`,
//! `any.rs` `Any::decode`, `id_set.rs`, `types/mod.rs` `TypeRef::decode`, `doc.rs`
//! `Options::decode`); `u32`, `u64` are LEB128 varints, `string` and `buf` a `u32` byte length
//! and the bytes:
//!
//! ```text
//! update      = u32 groups, group*, delete_set
//! group       = u32 structs, u64 client, u32 clock, struct*
//! struct      = info u8: 0 → GC u32 len | 10 → Skip u32 len | else item
//! item        = [id origin if info & 0x80] [id right_origin if info & 0x40]
//!               if neither origin: u32 parent_info (1 → string root name, else id parent),
//!                                  [string parent_sub if info & 0x20]
//!               content by info & 0x0f
//! content     = 1 Deleted u32 len | 2 JSON (refused) | 3 Binary buf
//!             | 4 String string | 5 Embed string (JSON) | 6 Format string key, string (JSON)
//!             | 7 Type type_ref | 8 Any u32 n, n any | 9 Doc (refused)
//! type_ref    = u8: 0 Array | 1 Map | 2 Text | 3 XmlElement string name | 4 XmlFragment
//!             | 5 XmlHook | 6 XmlText | 9 SubDoc | 15 Undefined
//! any         = u8 tag: 127 undefined | 126 null | 125 signed varint | 124 f32 (4 bytes)
//!             | 123 f64 (8) | 122 i64 (8) | 121 false | 120 true | 119 string
//!             | 118 u64 n, n (string key, any) | 117 u64 n, n any | 116 buf
//! id          = u64 client, u32 clock
//! delete_set  = u32 clients, (u64 client, u32 ranges, (u32 clock, u32 len)*)*
//! ```
//!
//! Where yrs differs from Yjs the walk follows yrs, since yrs is what reads the bytes next: no
//! name for an XmlHook, one byte (not a varint) for a type ref, and nothing after the delete
//! set (this walk refuses trailing bytes). Legacy JSON content is refused: yrs reads `n + 1`
//! strings for it and cannot read back what it then writes. Subdocuments are refused: yrs
//! leaks each one it decodes.
//!
//! Lengths are in yrs's units: a string's clock length is its UTF-16 length, Any content `n`,
//! Deleted its `len`, every other content 1. An item of length 0 is dropped by yrs without
//! advancing the clock; that is accepted here too.

use std::collections::HashMap;

use crate::error::{FrameError, PayloadError};
use crate::varint::Reader;

/// The deepest nesting of arrays and maps allowed in one `Any` value or embedded JSON text.
pub const MAX_ANY_DEPTH: usize = 64;

/// Client IDs are JavaScript safe integers; yrs debug-asserts on larger ones.
const CLIENT_ID_LIMIT: u64 = 1 << 53;

/// Struct info bytes and flags (yrs `block.rs`).
const INFO_GC: u8 = 0;
const INFO_SKIP: u8 = 10;
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
/// yrs takes an item's content ref from the low four bits (Yjs masks five).
const CONTENT_REF_MASK: u8 = 0b1111;

/// Item content refs.
mod content {
    pub(super) const DELETED: u8 = 1;
    pub(super) const JSON: u8 = 2;
    pub(super) const BINARY: u8 = 3;
    pub(super) const STRING: u8 = 4;
    pub(super) const EMBED: u8 = 5;
    pub(super) const FORMAT: u8 = 6;
    pub(super) const TYPE: u8 = 7;
    pub(super) const ANY: u8 = 8;
    pub(super) const DOC: u8 = 9;
}

/// Shared type refs. 7 (weak link) exists only with yrs's `weak` feature, which Quire does not
/// enable, so yrs refuses it and so does this walk.
mod type_ref {
    pub(super) const ARRAY: u8 = 0;
    pub(super) const MAP: u8 = 1;
    pub(super) const TEXT: u8 = 2;
    pub(super) const XML_ELEMENT: u8 = 3;
    pub(super) const XML_FRAGMENT: u8 = 4;
    pub(super) const XML_HOOK: u8 = 5;
    pub(super) const XML_TEXT: u8 = 6;
    pub(super) const SUB_DOC: u8 = 9;
    pub(super) const UNDEFINED: u8 = 15;
}

/// lib0 `Any` tags.
mod any_tag {
    pub(super) const UNDEFINED: u8 = 127;
    pub(super) const NULL: u8 = 126;
    pub(super) const INTEGER: u8 = 125;
    pub(super) const FLOAT32: u8 = 124;
    pub(super) const FLOAT64: u8 = 123;
    pub(super) const BIGINT: u8 = 122;
    pub(super) const FALSE: u8 = 121;
    pub(super) const TRUE: u8 = 120;
    pub(super) const STRING: u8 = 119;
    pub(super) const MAP: u8 = 118;
    pub(super) const ARRAY: u8 = 117;
    pub(super) const BUFFER: u8 = 116;
}

/// The fewest bytes each counted element can take, used to refuse a count before walking it.
mod min_len {
    /// `u32 structs`, `u64 client`, `u32 clock`.
    pub(super) const GROUP: usize = 3;
    /// An info byte and a length (GC, Skip); every item takes at least 4.
    pub(super) const STRUCT: usize = 2;
    /// A tag byte.
    pub(super) const ANY: usize = 1;
    /// A key string and a value.
    pub(super) const ANY_MAP_ENTRY: usize = 2;
    /// `u64 client`, `u32 ranges`.
    pub(super) const DELETE_SET_CLIENT: usize = 2;
    /// `u32 clock`, `u32 len`.
    pub(super) const DELETE_RANGE: usize = 2;
}

/// Walks `bytes` as a Yjs v1 update the way yrs 0.28.1 decodes one and returns the first
/// reason yrs must not be given them. Passing means yrs can decode the update without an
/// allocation larger than its content, an arithmetic overflow, a debug assertion or deep
/// recursion; it does not mean the update applies to a given document.
pub fn validate_update_v1(bytes: &[u8]) -> Result<(), PayloadError> {
    walk_update_v1(bytes).map(drop)
}

/// [`validate_update_v1`], returning what the update refers to outside itself: a receiver
/// checks these against its document before applying anything (PROTOCOL §6.8), so refusing
/// an update with missing dependencies never needs undoing.
pub fn walk_update_v1(bytes: &[u8]) -> Result<References, PayloadError> {
    let mut walk = Walk {
        reader: Reader::new(bytes),
        references: References::default(),
    };
    walk.client_groups()?;
    walk.delete_set()?;
    match walk.reader.remaining() {
        0 => Ok(walk.references),
        trailing => Err(PayloadError::TrailingBytes(trailing)),
    }
}

/// What an update refers to outside itself, to check against a document before applying it.
///
/// For each client, `needs` is the end (exclusive) of the highest clock that an item's
/// origin, right origin or parent of another client, or a delete range, names; `holds` is the
/// end of the update's own structs of that client. An item's references to its own client are
/// not listed: they name earlier clocks (the walk refuses the others), which the update's own
/// structs or the receiver's document cover, since a receiver accepts an update only if each
/// client's structs in it start at or below the clock it holds (PROTOCOL §6.8). So the update
/// applies completely if every client's need is covered by the receiver's clock or by the
/// update's own structs ([`References::first_missing`]); the one case this cannot see is a
/// cycle of references between the update's own structs of different clients, which leaves
/// parts waiting once applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct References {
    needs: HashMap<u64, u64>,
    holds: HashMap<u64, u64>,
}

impl References {
    /// The first client whose needed clocks are neither held by the receiver (`held` gives
    /// the receiver's clock of a client) nor carried by the update, with the end it needs.
    pub fn first_missing(&self, held: impl Fn(u64) -> u32) -> Option<(u64, u64)> {
        self.needs.iter().find_map(|(&client, &end)| {
            let carried = self.holds.get(&client).copied().unwrap_or(0);
            let covered = u64::from(held(client)).max(carried);
            (end > covered).then_some((client, end))
        })
    }

    fn need(&mut self, client: u64, end: u64) {
        let entry = self.needs.entry(client).or_default();
        *entry = (*entry).max(end);
    }

    fn hold(&mut self, client: u64, end: u64) {
        let entry = self.holds.entry(client).or_default();
        *entry = (*entry).max(end);
    }
}

struct Walk<'a> {
    reader: Reader<'a>,
    references: References,
}

impl<'a> Walk<'a> {
    fn client_groups(&mut self) -> Result<(), PayloadError> {
        let groups = self.count("client group count", min_len::GROUP)?;
        for _ in 0..groups {
            let structs = self.count("struct count", min_len::STRUCT)?;
            let client = self.client_id("client")?;
            let mut clock = self.u32("clock")?;
            for _ in 0..structs {
                let len = self.struct_len(client, clock)?;
                clock = clock.checked_add(len).ok_or(PayloadError::ClockOverflow {
                    client,
                    clock,
                    len,
                })?;
            }
            self.references.hold(client, u64::from(clock));
        }
        Ok(())
    }

    /// Walks one struct, the one at `clock` of `client`, and returns the clock length yrs
    /// gives it.
    fn struct_len(&mut self, client: u64, clock: u32) -> Result<u32, PayloadError> {
        match self.u8("struct info")? {
            // A skip stands for clocks missing inside the update: only merged updates with
            // gaps hold one, which no correct peer sends (PROTOCOL §6.8), and yrs underflows
            // a clock counter when a later struct overlaps a skip it integrated.
            INFO_SKIP => Err(PayloadError::Unsupported("a skip struct (info 10)")),
            INFO_GC => {
                let len = self.u32("struct length")?;
                if len == 0 {
                    return Err(PayloadError::EmptyRange("GC struct"));
                }
                Ok(len)
            }
            info => self.item(info, client, clock),
        }
    }

    /// An item's origin, right origin and parent existed before it was made, so one from the
    /// item's own client has a lower clock. yrs trusts this: an item referring to its own
    /// client's later clocks made it free a block it still used (heap use-after-free, found
    /// by the server's fuzz target), so such an item is refused.
    fn item(&mut self, info: u8, client: u64, clock: u32) -> Result<u32, PayloadError> {
        let earlier = |this: &mut Self, what: &'static str| {
            let (id_client, id_clock) = this.id(what)?;
            if id_client != client {
                this.references.need(id_client, u64::from(id_clock) + 1);
            } else if id_clock >= clock {
                return Err(PayloadError::ImpossibleReference {
                    client,
                    clock,
                    refers_to: id_clock,
                });
            }
            Ok(())
        };
        if info & HAS_ORIGIN != 0 {
            earlier(self, "origin")?;
        }
        if info & HAS_RIGHT_ORIGIN != 0 {
            earlier(self, "right origin")?;
        }
        if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
            // yrs reads the parent info as a u32 varint and names a root type only when it is 1.
            if self.u32("parent info")? == 1 {
                self.string("root type name")?;
            } else {
                earlier(self, "parent")?;
            }
            if info & HAS_PARENT_SUB != 0 {
                self.string("map key")?;
            }
        }
        self.content(info & CONTENT_REF_MASK)
    }

    /// Walks an item's content and returns its length in clock units.
    fn content(&mut self, content_ref: u8) -> Result<u32, PayloadError> {
        match content_ref {
            content::DELETED => self.u32("deleted length"),
            // yrs reads `n + 1` values for a count of `n` (Yjs reads `n`) and writes back the
            // count of what it read, so an update holding this legacy content (no current Yjs
            // writes it) cannot be read back once stored: the next encoding of the document,
            // or of its pending part, fails. Refused outright.
            content::JSON => Err(PayloadError::Unsupported(
                "legacy JSON content (content ref 2)",
            )),
            content::BINARY => self.buf("binary content").map(|_| 1),
            content::STRING => {
                let text = self.string("string content")?;
                // Fits: a string's UTF-16 length never exceeds its UTF-8 length, a u32.
                Ok(text.encode_utf16().count() as u32)
            }
            content::EMBED => self.json("embed").map(|()| 1),
            content::FORMAT => {
                self.string("format key")?;
                self.json("format value").map(|()| 1)
            }
            content::TYPE => self.type_ref().map(|()| 1),
            content::ANY => {
                let n = self.u32("Any count")?;
                self.check_count(u64::from(n), min_len::ANY)?;
                for _ in 0..n {
                    self.any(0)?;
                }
                Ok(n)
            }
            // Every subdocument yrs decodes keeps its store alive after the update is dropped
            // (LeakSanitizer, the server's fuzz target): a client could grow the server's
            // memory without bound. Quire's protocol does not sync subdocuments anyway.
            content::DOC => Err(PayloadError::Unsupported("a subdocument (content ref 9)")),
            tag => Err(PayloadError::UnknownTag {
                what: "content",
                tag,
            }),
        }
    }

    fn type_ref(&mut self) -> Result<(), PayloadError> {
        // One byte: yrs reads the type ref with `read_u8`, not as a varint.
        match self.u8("type ref")? {
            type_ref::XML_ELEMENT => self.string("XML element name").map(|_| ()),
            type_ref::ARRAY
            | type_ref::MAP
            | type_ref::TEXT
            | type_ref::XML_FRAGMENT
            | type_ref::XML_HOOK
            | type_ref::XML_TEXT
            | type_ref::SUB_DOC
            | type_ref::UNDEFINED => Ok(()),
            tag => Err(PayloadError::UnknownTag {
                what: "type ref",
                tag,
            }),
        }
    }

    /// Walks one `Any` value enclosed in `depth` arrays or maps.
    fn any(&mut self, depth: usize) -> Result<(), PayloadError> {
        match self.u8("Any tag")? {
            any_tag::UNDEFINED | any_tag::NULL | any_tag::FALSE | any_tag::TRUE => Ok(()),
            any_tag::INTEGER => self.signed_varint(),
            any_tag::FLOAT32 => self.fixed(4, "float32"),
            any_tag::FLOAT64 => self.fixed(8, "float64"),
            any_tag::BIGINT => self.fixed(8, "bigint"),
            any_tag::STRING => self.string("Any string").map(|_| ()),
            any_tag::BUFFER => self.buf("Any buffer").map(|_| ()),
            any_tag::MAP => {
                let entries = self.container(depth, "Any map size", min_len::ANY_MAP_ENTRY)?;
                for _ in 0..entries {
                    self.string("Any map key")?;
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            any_tag::ARRAY => {
                let items = self.container(depth, "Any array length", min_len::ANY)?;
                for _ in 0..items {
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            tag => Err(PayloadError::UnknownTag { what: "Any", tag }),
        }
    }

    /// Reads the size of an `Any` array or map (a u64 in yrs) at `depth`, refusing it if it
    /// nests too deep or claims more elements than the bytes left can hold.
    fn container(
        &mut self,
        depth: usize,
        what: &'static str,
        min_element_len: usize,
    ) -> Result<u64, PayloadError> {
        if depth >= MAX_ANY_DEPTH {
            return Err(PayloadError::TooDeep(MAX_ANY_DEPTH));
        }
        let n = self.u64(what)?;
        self.check_count(n, min_element_len)?;
        Ok(n)
    }

    /// A lib0 signed varint (yrs `read_var::<i64>`): 6 bits, then 7 per byte. yrs shifts by
    /// 69 on an eleventh byte and negates `i64::MIN` (both panic in debug builds), so the
    /// magnitude must fit in 63 bits, which also bounds it to 10 bytes.
    fn signed_varint(&mut self) -> Result<(), PayloadError> {
        let first = self.u8("integer")?;
        let mut more = first & 0x80 != 0;
        let mut shift = 6u32;
        while more {
            let byte = self.u8("integer")?;
            let bits = u64::from(byte & 0x7f);
            if shift >= 63 || bits >> (63 - shift) != 0 {
                return Err(PayloadError::Malformed(
                    "Any integer does not fit in 64 bits".into(),
                ));
            }
            more = byte & 0x80 != 0;
            shift += 7;
        }
        Ok(())
    }

    /// A JSON text (yrs parses it with serde_json, which allocates no more than the text):
    /// its arrays and objects may nest at most [`MAX_ANY_DEPTH`] deep. Syntax is left to yrs.
    fn json(&mut self, what: &'static str) -> Result<(), PayloadError> {
        let text = self.string(what)?;
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for byte in text.bytes() {
            if in_string {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_ANY_DEPTH {
                        return Err(PayloadError::TooDeep(MAX_ANY_DEPTH));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }

    fn delete_set(&mut self) -> Result<(), PayloadError> {
        let clients = self.count("delete set client count", min_len::DELETE_SET_CLIENT)?;
        for _ in 0..clients {
            let client = self.client_id("delete set client")?;
            let ranges = self.count("delete range count", min_len::DELETE_RANGE)?;
            for _ in 0..ranges {
                let clock = self.u32("delete range clock")?;
                let len = self.u32("delete range length")?;
                if len == 0 {
                    return Err(PayloadError::EmptyRange("delete range"));
                }
                let Some(end) = clock.checked_add(len) else {
                    return Err(PayloadError::ClockOverflow { client, clock, len });
                };
                self.references.need(client, u64::from(end));
            }
        }
        Ok(())
    }

    // ---- Primitives -----------------------------------------------------------------------

    /// An ID (`client`, `clock`) as yrs's `read_id` reads it.
    /// An ID: `(client, clock)`.
    fn id(&mut self, what: &'static str) -> Result<(u64, u32), PayloadError> {
        let client = self.client_id(what)?;
        Ok((client, self.u32(what)?))
    }

    fn client_id(&mut self, what: &'static str) -> Result<u64, PayloadError> {
        let client = self.u64(what)?;
        if client >= CLIENT_ID_LIMIT {
            return Err(PayloadError::ClientIdTooLarge(client));
        }
        Ok(client)
    }

    /// A u32 count whose elements take at least `min_element_len` bytes each.
    fn count(&mut self, what: &'static str, min_element_len: usize) -> Result<u32, PayloadError> {
        let n = self.u32(what)?;
        self.check_count(u64::from(n), min_element_len)?;
        Ok(n)
    }

    /// Refuses a count of elements that the bytes left cannot hold.
    fn check_count(&self, claimed: u64, min_element_len: usize) -> Result<(), PayloadError> {
        let available = self.reader.remaining();
        if claimed > (available / min_element_len) as u64 {
            return Err(PayloadError::ImplausibleCount { claimed, available });
        }
        Ok(())
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PayloadError> {
        self.reader.read_u8().map_err(|err| malformed(what, err))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, PayloadError> {
        self.reader
            .read_varint()
            .map_err(|err| malformed(what, err))
    }

    /// A varint yrs reads as `u32`. yrs wraps a larger value silently; it is refused here.
    fn u32(&mut self, what: &'static str) -> Result<u32, PayloadError> {
        let value = self.u64(what)?;
        u32::try_from(value)
            .map_err(|_| PayloadError::Malformed(format!("{what} {value} does not fit in 32 bits")))
    }

    /// A `u32` length and that many bytes (lib0 `readVarUint8Array`, yrs `read_buf`).
    fn buf(&mut self, what: &'static str) -> Result<&'a [u8], PayloadError> {
        let len = self.u32(what)?;
        let len = usize::try_from(len).map_err(|_| truncated(what))?;
        self.reader
            .read_bytes(len)
            .map_err(|err| malformed(what, err))
    }

    fn string(&mut self, what: &'static str) -> Result<&'a str, PayloadError> {
        let bytes = self.buf(what)?;
        std::str::from_utf8(bytes).map_err(|_| malformed(what, FrameError::InvalidUtf8))
    }

    fn fixed(&mut self, len: usize, what: &'static str) -> Result<(), PayloadError> {
        self.reader
            .read_bytes(len)
            .map(|_| ())
            .map_err(|err| malformed(what, err))
    }
}

fn malformed(what: &'static str, err: FrameError) -> PayloadError {
    match err {
        FrameError::Truncated => truncated(what),
        FrameError::InvalidUtf8 => PayloadError::Malformed(format!("{what} is not valid UTF-8")),
        other => PayloadError::Malformed(format!("{what}: {other}")),
    }
}

fn truncated(what: &'static str) -> PayloadError {
    PayloadError::Malformed(format!("the update ends inside {what}"))
}

#[cfg(test)]
mod tests;
