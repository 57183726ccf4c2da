//! The protobuf wire format, read and written by hand for the two messages
//! on `Check`'s hot path. Envoy's `CheckRequest` is about 2 KB of which
//! rampart reads a few fields: walking the bytes in place finds them
//! without building a message (no allocation, no reference counts). The
//! answer is a handful of short fields, written straight into one buffer
//! instead of through maps of owned strings.
//!
//! The reader is strict where generated code would be lenient in ways
//! Envoy never needs: groups (a proto2 encoding) are refused, and callers
//! refuse a singular message field sent twice instead of merging the two.
//! A request refused here is answered with an error, which Envoy, failing
//! closed, turns into a denial.

/// Why bytes are not a protobuf message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf: {0}")]
pub struct WireError(pub &'static str);

/// A field's value as encoded: numbers undecoded by type, length-delimited
/// contents borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    /// The contents of a length-delimited field (string, bytes, message).
    pub fn bytes(self) -> Result<&'a [u8], WireError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(WireError("a string or message field has another wire type")),
        }
    }

    /// A varint field (int32, int64, uint*, bool, enum) as its 64 bits.
    pub fn varint(self) -> Result<u64, WireError> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(WireError("an integer field has another wire type")),
        }
    }

    /// A string field: its contents, which must be UTF-8.
    pub fn text(self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError("a string field is not UTF-8"))
    }
}

/// The fields of a message in the order written.
pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields { rest: message }
}

/// Iterates `(field number, value)`; after an error, yields nothing more.
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    #[inline]
    fn next_field(&mut self) -> Result<(u32, Value<'a>), WireError> {
        let key = read_varint(&mut self.rest)?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| (1..=MAX_FIELD_NUMBER).contains(n))
            .ok_or(WireError("a field number is out of range"))?;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(&mut self.rest)?),
            1 => Value::Fixed64(u64::from_le_bytes(
                take(&mut self.rest, 8)?
                    .try_into()
                    .map_err(|_| WireError("a fixed64 field is truncated"))?,
            )),
            2 => {
                let len = usize::try_from(read_varint(&mut self.rest)?)
                    .map_err(|_| WireError("a length is out of range"))?;
                Value::Bytes(take(&mut self.rest, len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                take(&mut self.rest, 4)?
                    .try_into()
                    .map_err(|_| WireError("a fixed32 field is truncated"))?,
            )),
            3 | 4 => return Err(WireError("groups are not read")),
            _ => return Err(WireError("an unknown wire type")),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.next_field();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

/// Protobuf's largest field number.
const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

#[inline]
fn take<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8], WireError> {
    if rest.len() < len {
        return Err(WireError("a field runs past the end of its message"));
    }
    let (taken, left) = rest.split_at(len);
    *rest = left;
    Ok(taken)
}

/// A varint (prost's own readers and writers are hidden from its public
/// API, meant for generated code only).
#[inline]
fn read_varint(rest: &mut &[u8]) -> Result<u64, WireError> {
    // Most keys and lengths fit in one byte.
    if let Some((&byte, after)) = rest.split_first() {
        if byte < 0x80 {
            *rest = after;
            return Ok(u64::from(byte));
        }
    }
    let mut value = 0u64;
    for (i, byte) in rest.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // The tenth byte may carry only the 64th bit.
            if i == 9 && *byte > 1 {
                break;
            }
            *rest = &rest[i + 1..];
            return Ok(value);
        }
    }
    Err(WireError("a varint is truncated or longer than 64 bits"))
}

/// The value of a `map<string, V>` entry whose key is `key` (the last such
/// entry, as a decoded map keeps), among the entries of field `number` of
/// `message`. Keys compare as `same` says. An entry that writes its value
/// twice is an error rather than merged.
pub fn map_value<'a>(
    message: &'a [u8],
    number: u32,
    key: &[u8],
    same: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<Option<Value<'a>>, WireError> {
    let mut found = None;
    for field in fields(message) {
        let (n, value) = field?;
        if n != number {
            continue;
        }
        let (entry_key, entry_value) = map_entry(value.bytes()?)?;
        if same(entry_key, key) {
            // An entry without a value maps its key to the default.
            found = Some(entry_value.unwrap_or(Value::Bytes(&[])));
        }
    }
    Ok(found)
}

/// A map entry's key (empty when absent) and value; a key written twice
/// counts as its last, a value written twice is refused.
pub fn map_entry(entry: &[u8]) -> Result<(&[u8], Option<Value<'_>>), WireError> {
    let mut key: &[u8] = &[];
    let mut value = None;
    for field in fields(entry) {
        match field? {
            (1, k) => key = k.bytes()?,
            (2, _) if value.is_some() => {
                return Err(WireError("a map entry writes its value twice"));
            }
            (2, v) => value = Some(v),
            _ => {}
        }
    }
    Ok((key, value))
}

/// The longest varint: ten bytes for a 64-bit value.
const MAX_VARINT: usize = 10;

/// Writes `value` as a varint into `out`, returning its length.
fn varint_into(mut value: u64, out: &mut [u8; MAX_VARINT]) -> usize {
    let mut n = 0;
    while value >= 0x80 {
        out[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    out[n] = value as u8;
    n + 1
}

/// Writes a message into one growing buffer. A nested message's length is
/// written after its contents, moved into place when longer than a byte.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn varint(&mut self, value: u64) {
        let mut encoded = [0u8; MAX_VARINT];
        let n = varint_into(value, &mut encoded);
        self.buf.extend_from_slice(&encoded[..n]);
    }

    fn key(&mut self, number: u32, wire_type: u8) {
        self.varint(u64::from(number) << 3 | u64::from(wire_type));
    }

    /// A `string` or `bytes` field (written even when empty).
    pub fn bytes(&mut self, number: u32, value: &[u8]) {
        self.key(number, 2);
        self.varint(value.len() as u64);
        self.buf.extend_from_slice(value);
    }

    pub fn string(&mut self, number: u32, value: &str) {
        self.bytes(number, value.as_bytes());
    }

    /// An `int32`, `int64` or enum field; zero, the default, is left out.
    pub fn int(&mut self, number: u32, value: i64) {
        if value != 0 {
            self.key(number, 0);
            // Negative numbers take ten bytes, as protobuf writes them.
            self.varint(value as u64);
        }
    }

    /// A message field whose contents `contents` writes.
    pub fn message(&mut self, number: u32, contents: impl FnOnce(&mut Writer)) {
        self.key(number, 2);
        let at = self.buf.len();
        // One byte for the length, the usual case; moved along if longer.
        self.buf.push(0);
        contents(self);
        let len = self.buf.len() - at - 1;
        let mut prefix = [0u8; MAX_VARINT];
        let n = varint_into(len as u64, &mut prefix);
        if n > 1 {
            let end = self.buf.len();
            self.buf.resize(end + n - 1, 0);
            self.buf.copy_within(at + 1..end, at + n);
        }
        self.buf[at..at + n].copy_from_slice(&prefix[..n]);
    }

    /// A `string` or `bytes` field written in place by `contents` (a JSON
    /// body, without a buffer of its own).
    pub fn bytes_with(&mut self, number: u32, contents: impl FnOnce(&mut Vec<u8>)) {
        self.message(number, |w| contents(&mut w.buf));
    }

    /// One `map<string, string>`-shaped entry of field `number`.
    pub fn entry(&mut self, number: u32, key: &str, value: impl FnOnce(&mut Writer)) {
        self.message(number, |w| {
            w.string(1, key);
            w.message(2, value);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};
    use proptest::prelude::*;
    use prost::Message;

    proptest! {
        /// Whatever prost writes, the reader walks to the same fields.
        #[test]
        fn reads_what_prost_writes(
            fields_in in proptest::collection::btree_map("[a-z]{0,6}", ".{0,300}", 0..8),
        ) {
            let message = Struct {
                fields: fields_in
                    .iter()
                    .map(|(k, v)| (k.clone(), PbValue { kind: Some(Kind::StringValue(v.clone())) }))
                    .collect(),
            };
            let bytes = message.encode_to_vec();
            for (k, v) in &fields_in {
                let value = map_value(&bytes, 1, k.as_bytes(), |a, b| a == b)
                    .expect("well-formed")
                    .expect("present")
                    .bytes()
                    .expect("a message");
                let kind = fields(value).last().expect("a kind").expect("well-formed");
                prop_assert_eq!(kind.0, 3);
                prop_assert_eq!(kind.1.text(), Ok(v.as_str()));
            }
        }

        /// What the writer writes, prost reads back.
        #[test]
        fn prost_reads_what_the_writer_writes(
            fields_in in proptest::collection::btree_map("[a-z]{0,6}", ".{0,300}", 0..8),
        ) {
            let mut w = Writer::default();
            for (k, v) in &fields_in {
                w.entry(1, k, |w| w.string(3, v));
            }
            let read = Struct::decode(&w.into_bytes()[..]).expect("decodes");
            prop_assert_eq!(read.fields.len(), fields_in.len());
            for (k, v) in &fields_in {
                prop_assert_eq!(
                    read.fields.get(k).and_then(|v| v.kind.clone()),
                    Some(Kind::StringValue(v.clone()))
                );
            }
        }

        /// Any bytes: an error or fields, never a panic, and never a field
        /// reaching past the end.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for field in fields(&bytes) {
                if let Ok((_, Value::Bytes(b))) = field {
                    prop_assert!(b.len() <= bytes.len());
                    let _ = map_entry(b);
                }
            }
        }

        #[test]
        fn varints_round_trip(value in any::<u64>()) {
            let mut w = Writer::default();
            w.varint(value);
            let bytes = w.into_bytes();
            let mut rest = &bytes[..];
            prop_assert_eq!(read_varint(&mut rest), Ok(value));
            prop_assert!(rest.is_empty());
        }
    }

    #[test]
    fn malformations_are_errors() {
        fn first(b: &[u8]) -> Result<(u32, Value<'_>), WireError> {
            fields(b).next().expect("a field")
        }
        assert!(first(&[0x08]).is_err(), "varint value missing");
        assert!(first(&[0x0a, 0x05, b'a']).is_err(), "length past the end");
        assert!(first(&[0x0b]).is_err(), "a group");
        assert!(first(&[0x0f]).is_err(), "wire type 7");
        assert!(first(&[0x00, 0x00]).is_err(), "field number 0");
        assert!(
            first(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).is_err(),
            "65 bits"
        );
        let mut after_error = fields(&[0x0a, 0x05, b'a', 0x08, 0x01]);
        assert!(matches!(after_error.next(), Some(Err(_))));
        assert!(after_error.next().is_none());
        // An entry's value twice is refused, not merged.
        let entry = [0x0a, 0x01, b'k', 0x12, 0x00, 0x12, 0x00];
        assert!(map_entry(&entry).is_err());
    }

    #[test]
    fn long_nested_messages_get_their_length_moved_into_place() {
        let text = "x".repeat(20_000);
        let mut w = Writer::default();
        w.entry(1, "k", |w| w.string(3, &text));
        let read = Struct::decode(&w.into_bytes()[..]).expect("decodes");
        assert_eq!(
            read.fields.get("k").and_then(|v| v.kind.clone()),
            Some(Kind::StringValue(text))
        );
    }

    #[test]
    fn bytes_written_in_place_read_back_at_every_length_boundary() {
        for len in [0, 1, 127, 128, 16_383, 16_384] {
            let text = "y".repeat(len);
            let mut w = Writer::default();
            w.bytes_with(2, |buf| buf.extend_from_slice(text.as_bytes()));
            w.string(3, "after");
            let bytes = w.into_bytes();
            let read: Vec<(u32, &str)> = fields(&bytes)
                .map(|f| f.map(|(n, v)| (n, v.text().expect("text"))))
                .collect::<Result<_, _>>()
                .expect("well-formed");
            assert_eq!(read, [(2, text.as_str()), (3, "after")], "{len}");
        }
    }
}
