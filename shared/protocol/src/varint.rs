//! Unsigned LEB128 variable-length integers and length-prefixed strings, as written by lib0's
//! `writeVarUint` / `writeVarString` (the encoding every Yjs implementation already has).

use crate::error::FrameError;

/// The most bytes a `u64` takes as a varint.
pub const MAX_VARINT_LEN: usize = 10;

/// Appends `value` as an unsigned LEB128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a varint byte length followed by the UTF-8 bytes of `text`.
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    write_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// A cursor over an input buffer that never reads past its end.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn read_u8(&mut self) -> Result<u8, FrameError> {
        let byte = *self.bytes.get(self.pos).ok_or(FrameError::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    /// Reads an unsigned LEB128 varint; more than 64 bits of value is an error, not a wrap.
    pub fn read_varint(&mut self) -> Result<u64, FrameError> {
        let mut value: u64 = 0;
        for index in 0..MAX_VARINT_LEN {
            let byte = self.read_u8()?;
            let bits = u64::from(byte & 0x7f);
            let shift = 7 * index as u32;
            if index == MAX_VARINT_LEN - 1 && bits > 1 {
                return Err(FrameError::VarintOverflow);
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(FrameError::VarintOverflow)
    }

    /// Reads a varint that must fit in `u32` (channel IDs, codes, limits).
    pub fn read_varint_u32(&mut self) -> Result<u32, FrameError> {
        u32::try_from(self.read_varint()?).map_err(|_| FrameError::VarintOverflow)
    }

    /// Reads `len` raw bytes.
    pub fn read_bytes(&mut self, len: usize) -> Result<&'a [u8], FrameError> {
        if len > self.remaining() {
            return Err(FrameError::Truncated);
        }
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    /// Reads a varint length and that many UTF-8 bytes. The length is checked against the
    /// bytes actually present before anything is allocated.
    pub fn read_string(&mut self) -> Result<&'a str, FrameError> {
        let len = self.read_varint()?;
        let len = usize::try_from(len).map_err(|_| FrameError::Truncated)?;
        let bytes = self.read_bytes(len)?;
        std::str::from_utf8(bytes).map_err(|_| FrameError::InvalidUtf8)
    }

    /// Everything not yet consumed.
    pub fn rest(&mut self) -> &'a [u8] {
        let slice = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        slice
    }

    /// Fails unless the whole input was consumed.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(FrameError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            write_varint(&mut out, *value);
            assert_eq!(&out, bytes, "encoding {value}");
            assert_eq!(Reader::new(bytes).read_varint().unwrap(), *value);
        }
    }

    #[test]
    fn overlong_and_truncated_varints_are_errors() {
        let eleven = [0xff; 11];
        assert_eq!(
            Reader::new(&eleven).read_varint(),
            Err(FrameError::VarintOverflow)
        );
        let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(
            Reader::new(&too_big).read_varint(),
            Err(FrameError::VarintOverflow)
        );
        assert_eq!(
            Reader::new(&[0x80]).read_varint(),
            Err(FrameError::Truncated)
        );
        assert_eq!(Reader::new(&[]).read_varint(), Err(FrameError::Truncated));
    }

    #[test]
    fn string_length_is_checked_before_reading() {
        // Claims 2^32 bytes, holds 1.
        let bytes = [0x80, 0x80, 0x80, 0x80, 0x10, b'a'];
        assert_eq!(
            Reader::new(&bytes).read_string(),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0x02, 0xff, 0xfe]).read_string(),
            Err(FrameError::InvalidUtf8)
        );
    }
}
