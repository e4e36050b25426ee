//! Batch layout version 1: the packed form in which items cross the adapter boundary.
//!
//! A batch is one byte buffer (`data`) and one word buffer (`index`):
//!
//! ```text
//! index = [LAYOUT_VERSION, item_count, header_count,
//!          item 0 (ITEM_WORDS words), item 1, ...,
//!          header 0 (HEADER_WORDS words), header 1, ...]
//! item  = [flags, sequence_low, sequence_high,
//!          id, client_id, destination, key, content_type, payload   (offset, length each),
//!          header_start, header_count]
//! header = [key offset, key length, value offset, value length]
//! ```
//!
//! Offsets are into `data`. A length of [`ABSENT`] marks an optional field that is not
//! set, which is different from an empty one. The same code reads and writes the
//! layout on both sides of the boundary: guests through this crate, the host through
//! its dependency on it with the `guest` feature off.

use std::fmt;
use std::str;

/// The layout version this crate reads and writes. Stored as the first index word so
/// that a reader refuses a batch it does not understand instead of misreading it.
pub const LAYOUT_VERSION: u32 = 1;
/// Words before the first item: version, item count, header count.
pub const PREFIX_WORDS: usize = 3;
/// Words per item.
pub const ITEM_WORDS: usize = 17;
/// Words per header entry.
pub const HEADER_WORDS: usize = 4;
/// The length word of an optional field that is not set.
pub const ABSENT: u32 = u32::MAX;

const FLAGS: usize = 0;
const SEQ_LOW: usize = 1;
const SEQ_HIGH: usize = 2;
const ID: usize = 3;
const CLIENT_ID: usize = 5;
const DESTINATION: usize = 7;
const KEY: usize = 9;
const CONTENT_TYPE: usize = 11;
const PAYLOAD: usize = 13;
const HEADER_START: usize = 15;
const HEADER_COUNT: usize = 16;

/// The spans that must hold UTF-8 text, checked once when a batch is parsed.
const TEXT_SPANS: [usize; 4] = [ID, CLIENT_ID, DESTINATION, CONTENT_TYPE];

/// What an item is. Stored in the low byte of the flags word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A message: a client publish, a broker record, a frame for a client.
    Data = 0,
    /// A client asks for events matching `destination` (a topic pattern).
    Subscribe = 1,
    /// A client withdraws a subscription to `destination`.
    Unsubscribe = 2,
    /// A client acknowledges the event with `sequence` (or `id`).
    Ack = 3,
    /// A client resumes its stream after `sequence`.
    Resume = 4,
}

impl Kind {
    /// The kind stored in the low byte of a flags word; `None` for an unknown one.
    #[must_use]
    pub fn from_flags(bits: u32) -> Option<Self> {
        Some(match bits & KIND_MASK {
            0 => Self::Data,
            1 => Self::Subscribe,
            2 => Self::Unsubscribe,
            3 => Self::Ack,
            4 => Self::Resume,
            _ => return None,
        })
    }
}

const KIND_MASK: u32 = 0xff;
/// Flag: the payload is binary (a WebSocket binary frame, a non-text record).
pub const FLAG_BINARY: u32 = 1 << 8;
/// Flag: the client wants an acknowledgement once the broker confirmed this item.
pub const FLAG_ACK_REQUESTED: u32 = 1 << 9;
/// Every flag bit this version defines; others must be zero.
const KNOWN_FLAGS: u32 = KIND_MASK | FLAG_BINARY | FLAG_ACK_REQUESTED;

/// Why a batch could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The index is shorter than its prefix says.
    Truncated { expected_words: usize, actual_words: usize },
    /// The first index word names a layout this reader does not know.
    Version(u32),
    /// A span of an item points outside `data`.
    OutOfBounds { item: usize, field: &'static str },
    /// A text span holds bytes that are not UTF-8.
    NotUtf8 { item: usize, field: &'static str },
    /// The flags word holds an unknown kind or flag bits.
    Flags { item: usize, flags: u32 },
    /// An item's header range lies outside the header table.
    Headers { item: usize },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { expected_words, actual_words } => {
                write!(f, "index has {actual_words} words, its prefix promises {expected_words}")
            }
            Self::Version(v) => write!(f, "layout version {v} is not supported (expected {LAYOUT_VERSION})"),
            Self::OutOfBounds { item, field } => write!(f, "item {item}: {field} lies outside the data buffer"),
            Self::NotUtf8 { item, field } => write!(f, "item {item}: {field} is not UTF-8"),
            Self::Flags { item, flags } => write!(f, "item {item}: unknown flags {flags:#x}"),
            Self::Headers { item } => write!(f, "item {item}: header range lies outside the header table"),
        }
    }
}

impl std::error::Error for LayoutError {}

fn field_name(span: usize) -> &'static str {
    match span {
        ID => "id",
        CLIENT_ID => "client id",
        DESTINATION => "destination",
        KEY => "key",
        CONTENT_TYPE => "content type",
        PAYLOAD => "payload",
        _ => "header",
    }
}

/// A validated, borrowed batch. Every span is known to lie inside `data` and every
/// text span to be UTF-8, so item accessors cannot fail.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    data: &'a [u8],
    index: &'a [u32],
    items: usize,
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Batch<'a> {
    /// Checks a batch written by the other side of the boundary.
    ///
    /// # Errors
    /// A [`LayoutError`] naming the first item and field that is out of bounds, not
    /// UTF-8, or flagged with bits this version does not define.
    pub fn parse(data: &'a [u8], index: &'a [u32]) -> Result<Self, LayoutError> {
        if index.len() < PREFIX_WORDS {
            return Err(LayoutError::Truncated { expected_words: PREFIX_WORDS, actual_words: index.len() });
        }
        if index[0] != LAYOUT_VERSION {
            return Err(LayoutError::Version(index[0]));
        }
        let items = index[1] as usize;
        let headers = index[2] as usize;
        let expected_words = items
            .checked_mul(ITEM_WORDS)
            .and_then(|w| headers.checked_mul(HEADER_WORDS).and_then(|h| w.checked_add(h)))
            .and_then(|w| w.checked_add(PREFIX_WORDS))
            .unwrap_or(usize::MAX);
        if index.len() != expected_words {
            return Err(LayoutError::Truncated { expected_words, actual_words: index.len() });
        }
        let batch = Self { data, index, items };
        for item in 0..items {
            batch.check_item(item, headers)?;
        }
        Ok(batch)
    }

    fn check_item(&self, item: usize, header_total: usize) -> Result<(), LayoutError> {
        let words = &self.index[PREFIX_WORDS + item * ITEM_WORDS..][..ITEM_WORDS];
        let flags = words[FLAGS];
        if flags & !KNOWN_FLAGS != 0 || Kind::from_flags(flags).is_none() {
            return Err(LayoutError::Flags { item, flags });
        }
        for span in [ID, CLIENT_ID, DESTINATION, KEY, CONTENT_TYPE, PAYLOAD] {
            let field = field_name(span);
            let bytes =
                span_bytes(self.data, words[span], words[span + 1]).ok_or(LayoutError::OutOfBounds { item, field })?;
            if TEXT_SPANS.contains(&span) && str::from_utf8(bytes.unwrap_or_default()).is_err() {
                return Err(LayoutError::NotUtf8 { item, field });
            }
        }
        let start = words[HEADER_START] as usize;
        let count = words[HEADER_COUNT] as usize;
        if start.checked_add(count).is_none_or(|end| end > header_total) {
            return Err(LayoutError::Headers { item });
        }
        for h in start..start + count {
            let hw = self.header_words(h);
            let key =
                span_bytes(self.data, hw[0], hw[1]).ok_or(LayoutError::OutOfBounds { item, field: "header key" })?;
            span_bytes(self.data, hw[2], hw[3]).ok_or(LayoutError::OutOfBounds { item, field: "header value" })?;
            if str::from_utf8(key.unwrap_or_default()).is_err() {
                return Err(LayoutError::NotUtf8 { item, field: "header key" });
            }
        }
        Ok(())
    }

    fn header_words(&self, header: usize) -> &'a [u32] {
        &self.index[PREFIX_WORDS + self.items * ITEM_WORDS + header * HEADER_WORDS..][..HEADER_WORDS]
    }

    /// The number of items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items
    }

    /// True when the batch holds no item.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Item `i`.
    ///
    /// # Panics
    /// When `i >= self.len()`, like slice indexing.
    #[must_use]
    pub fn get(&self, i: usize) -> Item<'a> {
        assert!(i < self.items, "item {i} of a batch of {}", self.items);
        Item { batch: *self, words: &self.index[PREFIX_WORDS + i * ITEM_WORDS..][..ITEM_WORDS] }
    }

    /// The items in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Item<'a>> + '_ {
        (0..self.items).map(|i| self.get(i))
    }

    /// The whole data buffer. The host uses it to share one allocation between the
    /// events it reads out of a batch.
    #[must_use]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
}

/// `Some(None)` for an absent field, `Some(Some(bytes))` for a set one, `None` when the
/// span lies outside `data`.
fn span_bytes(data: &[u8], offset: u32, len: u32) -> Option<Option<&[u8]>> {
    if len == ABSENT {
        return Some(None);
    }
    let start = offset as usize;
    data.get(start..start.checked_add(len as usize)?).map(Some)
}

/// One item of a validated batch.
#[derive(Clone, Copy)]
pub struct Item<'a> {
    batch: Batch<'a>,
    words: &'a [u32],
}

impl fmt::Debug for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Item")
            .field("kind", &self.kind())
            .field("flags", &self.flags())
            .field("sequence", &self.sequence())
            .field("id", &self.id())
            .field("client_id", &self.client_id())
            .field("destination", &self.destination())
            .field("key", &self.key())
            .field("content_type", &self.content_type())
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("payload", &String::from_utf8_lossy(self.payload()))
            .finish()
    }
}

impl<'a> Item<'a> {
    fn bytes(&self, span: usize) -> Option<&'a [u8]> {
        // `Batch::parse` checked every span, so the lookup cannot fail here.
        span_bytes(self.batch.data, self.words[span], self.words[span + 1]).flatten()
    }

    fn text(&self, span: usize) -> Option<&'a str> {
        // `Batch::parse` checked that text spans are UTF-8.
        self.bytes(span).map(|b| str::from_utf8(b).unwrap_or_default())
    }

    /// The raw flags word: the kind in the low byte, then `FLAG_*` bits.
    #[must_use]
    pub fn flags(&self) -> u32 {
        self.words[FLAGS]
    }

    /// What the item is.
    #[must_use]
    pub fn kind(&self) -> Kind {
        Kind::from_flags(self.flags()).unwrap_or(Kind::Data)
    }

    /// True when the payload is binary rather than text.
    #[must_use]
    pub fn is_binary(&self) -> bool {
        self.flags() & FLAG_BINARY != 0
    }

    /// True when the client asked for an acknowledgement.
    #[must_use]
    pub fn ack_requested(&self) -> bool {
        self.flags() & FLAG_ACK_REQUESTED != 0
    }

    /// The replay sequence (downstream) or the sequence a control item refers to.
    #[must_use]
    pub fn sequence(&self) -> u64 {
        u64::from(self.words[SEQ_HIGH]) << 32 | u64::from(self.words[SEQ_LOW])
    }

    /// The event or message id.
    #[must_use]
    pub fn id(&self) -> Option<&'a str> {
        self.text(ID)
    }

    /// The client a downstream event is meant for, or the client an upstream one came from.
    #[must_use]
    pub fn client_id(&self) -> Option<&'a str> {
        self.text(CLIENT_ID)
    }

    /// Topic, queue, exchange or subscription pattern.
    #[must_use]
    pub fn destination(&self) -> Option<&'a str> {
        self.text(DESTINATION)
    }

    /// The partitioning or routing key.
    #[must_use]
    pub fn key(&self) -> Option<&'a [u8]> {
        self.bytes(KEY)
    }

    /// The payload's media type.
    #[must_use]
    pub fn content_type(&self) -> Option<&'a str> {
        self.text(CONTENT_TYPE)
    }

    /// The payload bytes (empty when none).
    #[must_use]
    pub fn payload(&self) -> &'a [u8] {
        self.bytes(PAYLOAD).unwrap_or_default()
    }

    /// The headers in order, as `(key, value)`.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a [u8])> + use<'a> {
        let batch = self.batch;
        let start = self.words[HEADER_START] as usize;
        (start..start + self.words[HEADER_COUNT] as usize).map(move |h| {
            let w = batch.header_words(h);
            let key = span_bytes(batch.data, w[0], w[1]).flatten().unwrap_or_default();
            let value = span_bytes(batch.data, w[2], w[3]).flatten().unwrap_or_default();
            (str::from_utf8(key).unwrap_or_default(), value)
        })
    }

    /// The first header named `key`, compared ASCII case-insensitively as HTTP does.
    #[must_use]
    pub fn header(&self, key: &str) -> Option<&'a [u8]> {
        self.headers().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }
}

/// Writes a batch. Reusable: [`BatchBuilder::clear`] keeps the buffers' capacity.
#[derive(Debug, Default, Clone)]
pub struct BatchBuilder {
    data: Vec<u8>,
    items: Vec<u32>,
    headers: Vec<u32>,
}

/// A position in a [`BatchBuilder`] to roll back to when an item fails half-way.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    data: usize,
    items: usize,
    headers: usize,
}

impl BatchBuilder {
    /// A builder sized for `items` items holding `bytes` bytes in all.
    #[must_use]
    pub fn with_capacity(items: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            items: Vec::with_capacity(items * ITEM_WORDS),
            headers: Vec::with_capacity(items * 2 * HEADER_WORDS),
        }
    }

    /// Empties the builder, keeping its capacity.
    pub fn clear(&mut self) {
        self.data.clear();
        self.items.clear();
        self.headers.clear();
    }

    /// Items written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len() / ITEM_WORDS
    }

    /// True when no item was written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Starts a new item of `kind`. Its fields are set through the returned writer;
    /// fields left alone are absent, and the payload is empty.
    pub fn item(&mut self, kind: Kind) -> ItemWriter<'_> {
        let header_start = u32::try_from(self.headers.len() / HEADER_WORDS).unwrap_or(u32::MAX);
        self.items.extend_from_slice(&[
            kind as u32,
            0,
            0,
            0,
            ABSENT,
            0,
            ABSENT,
            0,
            ABSENT,
            0,
            ABSENT,
            0,
            ABSENT,
            0,
            0,
            header_start,
            0,
        ]);
        let base = self.items.len() - ITEM_WORDS;
        ItemWriter { builder: self, base }
    }

    /// Copies `item` whole: kind, flags, sequence, every field and header.
    pub fn copy(&mut self, item: &Item<'_>) -> ItemWriter<'_> {
        let mut w = self.copy_meta(item);
        w.payload(item.payload());
        w
    }

    /// Copies everything of `item` but its payload, for adapters that rewrite it.
    pub fn copy_meta(&mut self, item: &Item<'_>) -> ItemWriter<'_> {
        let mut w = self.item(item.kind());
        w.flags(item.flags()).sequence(item.sequence());
        if let Some(v) = item.id() {
            w.id(v);
        }
        if let Some(v) = item.client_id() {
            w.client_id(v);
        }
        if let Some(v) = item.destination() {
            w.destination(v);
        }
        if let Some(v) = item.key() {
            w.key(v);
        }
        if let Some(v) = item.content_type() {
            w.content_type(v);
        }
        for (k, v) in item.headers() {
            w.header(k, v);
        }
        w
    }

    /// Starts an item that keeps only what the host tracks `item` by: its kind, its flags
    /// (binary, ack requested), its sequence and its client id. Every other field is
    /// absent and the payload empty, for adapters that map the rest field by field, as
    /// endpoint adapters do between events and broker records.
    pub fn copy_tracking(&mut self, item: &Item<'_>) -> ItemWriter<'_> {
        let mut w = self.item(item.kind());
        w.flags(item.flags()).sequence(item.sequence());
        if let Some(client_id) = item.client_id() {
            w.client_id(client_id);
        }
        w
    }

    /// The current position, for [`BatchBuilder::rollback`].
    #[must_use]
    pub fn mark(&self) -> Mark {
        Mark { data: self.data.len(), items: self.items.len(), headers: self.headers.len() }
    }

    /// Forgets everything written since `mark`.
    pub fn rollback(&mut self, mark: Mark) {
        self.data.truncate(mark.data);
        self.items.truncate(mark.items);
        self.headers.truncate(mark.headers);
    }

    /// The finished batch, giving up the builder's buffers instead of copying them.
    #[must_use]
    pub fn into_parts(self) -> (Vec<u8>, Vec<u32>) {
        let index = self.index();
        (self.data, index)
    }

    /// The data buffer written so far.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The index as it stands.
    #[must_use]
    pub fn index(&self) -> Vec<u32> {
        let mut index = Vec::with_capacity(PREFIX_WORDS + self.items.len() + self.headers.len());
        index.extend_from_slice(&[
            LAYOUT_VERSION,
            u32::try_from(self.len()).unwrap_or(u32::MAX),
            u32::try_from(self.headers.len() / HEADER_WORDS).unwrap_or(u32::MAX),
        ]);
        index.extend_from_slice(&self.items);
        index.extend_from_slice(&self.headers);
        index
    }

    fn append(&mut self, bytes: &[u8]) -> (u32, u32) {
        let offset = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        self.data.extend_from_slice(bytes);
        (offset, u32::try_from(bytes.len()).unwrap_or(u32::MAX))
    }
}

/// Sets the fields of the item a [`BatchBuilder`] is writing. Each setter appends its
/// bytes to the data buffer, so set each field once.
#[derive(Debug)]
pub struct ItemWriter<'b> {
    builder: &'b mut BatchBuilder,
    base: usize,
}

impl ItemWriter<'_> {
    fn span(&mut self, field: usize, bytes: &[u8]) -> &mut Self {
        let (offset, len) = self.builder.append(bytes);
        self.builder.items[self.base + field] = offset;
        self.builder.items[self.base + field + 1] = len;
        self
    }

    /// Replaces the flag bits (the kind stays).
    pub fn flags(&mut self, flags: u32) -> &mut Self {
        let word = &mut self.builder.items[self.base + FLAGS];
        *word = (*word & KIND_MASK) | (flags & !KIND_MASK);
        self
    }

    /// Marks the payload binary or text.
    pub fn binary(&mut self, binary: bool) -> &mut Self {
        let word = &mut self.builder.items[self.base + FLAGS];
        if binary {
            *word |= FLAG_BINARY;
        } else {
            *word &= !FLAG_BINARY;
        }
        self
    }

    /// Asks for an acknowledgement once the broker confirmed the item.
    pub fn ack_requested(&mut self) -> &mut Self {
        self.builder.items[self.base + FLAGS] |= FLAG_ACK_REQUESTED;
        self
    }

    /// Sets the sequence word pair.
    pub fn sequence(&mut self, sequence: u64) -> &mut Self {
        // Splitting a u64 into its two 32-bit halves; the truncation is the point.
        #[allow(clippy::cast_possible_truncation)]
        let (low, high) = (sequence as u32, (sequence >> 32) as u32);
        self.builder.items[self.base + SEQ_LOW] = low;
        self.builder.items[self.base + SEQ_HIGH] = high;
        self
    }

    /// Sets the id.
    pub fn id(&mut self, id: &str) -> &mut Self {
        self.span(ID, id.as_bytes())
    }

    /// Sets the client id.
    pub fn client_id(&mut self, client_id: &str) -> &mut Self {
        self.span(CLIENT_ID, client_id.as_bytes())
    }

    /// Sets the destination.
    pub fn destination(&mut self, destination: &str) -> &mut Self {
        self.span(DESTINATION, destination.as_bytes())
    }

    /// Sets the key.
    pub fn key(&mut self, key: &[u8]) -> &mut Self {
        self.span(KEY, key)
    }

    /// Sets the content type.
    pub fn content_type(&mut self, content_type: &str) -> &mut Self {
        self.span(CONTENT_TYPE, content_type.as_bytes())
    }

    /// Sets the payload.
    pub fn payload(&mut self, payload: &[u8]) -> &mut Self {
        self.span(PAYLOAD, payload)
    }

    /// Appends the payload in pieces, for adapters that frame it (SSE `data:` lines).
    pub fn payload_parts(&mut self, parts: &[&[u8]]) -> &mut Self {
        let offset = u32::try_from(self.builder.data.len()).unwrap_or(u32::MAX);
        let mut len = 0usize;
        for part in parts {
            self.builder.data.extend_from_slice(part);
            len += part.len();
        }
        self.builder.items[self.base + PAYLOAD] = offset;
        self.builder.items[self.base + PAYLOAD + 1] = u32::try_from(len).unwrap_or(u32::MAX);
        self
    }

    /// Appends a header.
    pub fn header(&mut self, key: &str, value: &[u8]) -> &mut Self {
        let (ko, kl) = self.builder.append(key.as_bytes());
        let (vo, vl) = self.builder.append(value);
        self.builder.headers.extend_from_slice(&[ko, kl, vo, vl]);
        self.builder.items[self.base + HEADER_COUNT] += 1;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Vec<u32>) {
        let mut b = BatchBuilder::default();
        b.item(Kind::Data)
            .id("e1")
            .destination("orders")
            .key(b"k")
            .content_type("application/json")
            .payload(br#"{"a":1}"#)
            .header("x-one", b"1")
            .header("X-Two", b"2")
            .sequence(u64::from(u32::MAX) + 7);
        b.item(Kind::Subscribe).destination("a/*").binary(true);
        b.into_parts()
    }

    #[test]
    fn round_trips_every_field() {
        let (data, index) = sample();
        let batch = Batch::parse(&data, &index).expect("valid batch");
        assert_eq!(batch.len(), 2);
        let first = batch.get(0);
        assert_eq!(first.kind(), Kind::Data);
        assert_eq!(first.id(), Some("e1"));
        assert_eq!(first.client_id(), None);
        assert_eq!(first.destination(), Some("orders"));
        assert_eq!(first.key(), Some(&b"k"[..]));
        assert_eq!(first.content_type(), Some("application/json"));
        assert_eq!(first.payload(), br#"{"a":1}"#);
        assert_eq!(first.sequence(), u64::from(u32::MAX) + 7);
        assert_eq!(first.headers().collect::<Vec<_>>(), vec![("x-one", &b"1"[..]), ("X-Two", &b"2"[..])]);
        assert_eq!(first.header("x-two"), Some(&b"2"[..]));
        assert!(!first.is_binary());
        let second = batch.get(1);
        assert_eq!(second.kind(), Kind::Subscribe);
        assert!(second.is_binary());
        assert_eq!(second.payload(), b"");
        assert_eq!(second.headers().len(), 0);
    }

    #[test]
    fn empty_is_not_absent() {
        let mut b = BatchBuilder::default();
        b.item(Kind::Data).key(b"");
        let (data, index) = b.into_parts();
        let batch = Batch::parse(&data, &index).expect("valid batch");
        assert_eq!(batch.get(0).key(), Some(&b""[..]));
        assert_eq!(batch.get(0).id(), None);
    }

    #[test]
    fn rollback_forgets_a_half_written_item() {
        let mut b = BatchBuilder::default();
        b.item(Kind::Data).payload(b"kept");
        let mark = b.mark();
        b.item(Kind::Data).payload(b"dropped").header("h", b"v");
        b.rollback(mark);
        b.item(Kind::Data).payload(b"next").header("k", b"v");
        let (data, index) = b.into_parts();
        let batch = Batch::parse(&data, &index).expect("valid batch");
        let payloads: Vec<_> = batch.iter().map(|i| i.payload().to_vec()).collect();
        assert_eq!(payloads, vec![b"kept".to_vec(), b"next".to_vec()]);
        assert_eq!(batch.get(1).header("k"), Some(&b"v"[..]));
    }

    #[test]
    fn copy_tracking_keeps_kind_flags_sequence_and_client_id_only() {
        let mut input = BatchBuilder::default();
        input.item(Kind::Data).id("e1").destination("orders").key(b"k").content_type("text/plain").header("h", b"v");
        input.item(Kind::Unsubscribe).client_id("c9").sequence(4).binary(true).ack_requested().payload(b"p");
        let (data, index) = input.into_parts();
        let input = Batch::parse(&data, &index).expect("valid batch");

        let mut b = BatchBuilder::default();
        b.copy_tracking(&input.get(0)).payload(b"mapped");
        b.copy_tracking(&input.get(1));
        let (data, index) = b.into_parts();
        let out = Batch::parse(&data, &index).expect("valid batch");

        let plain = out.get(0);
        assert_eq!((plain.kind(), plain.flags(), plain.sequence(), plain.client_id()), (Kind::Data, 0, 0, None));
        assert_eq!((plain.id(), plain.destination(), plain.key(), plain.content_type()), (None, None, None, None));
        assert_eq!(plain.headers().len(), 0);
        assert_eq!(plain.payload(), b"mapped");

        let tracked = out.get(1);
        assert_eq!(tracked.kind(), Kind::Unsubscribe);
        assert_eq!(tracked.flags(), Kind::Unsubscribe as u32 | FLAG_BINARY | FLAG_ACK_REQUESTED);
        assert_eq!((tracked.sequence(), tracked.client_id()), (4, Some("c9")));
        assert_eq!(tracked.payload(), b"");
    }

    #[test]
    fn refuses_hostile_indexes() {
        let (data, index) = sample();
        let mut bad = index.clone();
        bad[0] = 9;
        assert_eq!(Batch::parse(&data, &bad).expect_err("refused"), LayoutError::Version(9));

        let mut bad = index.clone();
        bad[PREFIX_WORDS + PAYLOAD] = u32::MAX - 1;
        assert_eq!(
            Batch::parse(&data, &bad).expect_err("refused"),
            LayoutError::OutOfBounds { item: 0, field: "payload" }
        );

        let mut bad = index.clone();
        bad[1] = u32::MAX;
        assert!(matches!(Batch::parse(&data, &bad), Err(LayoutError::Truncated { .. })));

        let mut bad = index.clone();
        bad[PREFIX_WORDS + HEADER_COUNT] = 3;
        assert_eq!(Batch::parse(&data, &bad).expect_err("refused"), LayoutError::Headers { item: 0 });

        let mut bad = index.clone();
        bad[PREFIX_WORDS + FLAGS] = 0x77;
        assert!(matches!(Batch::parse(&data, &bad), Err(LayoutError::Flags { item: 0, .. })));

        let mut bad_data = data.clone();
        let id_offset = index[PREFIX_WORDS + ID] as usize;
        bad_data[id_offset] = 0xff;
        assert_eq!(
            Batch::parse(&bad_data, &index).expect_err("refused"),
            LayoutError::NotUtf8 { item: 0, field: "id" }
        );

        assert!(matches!(Batch::parse(&data, &index[..2]), Err(LayoutError::Truncated { .. })));
    }
}
