//! What the fuzz targets share: batches written from arbitrary items, patches that make
//! a valid batch hostile in a few places, and the comparison of an item with what was
//! written.
//!
//! Random index words almost never form a batch that passes the version and length
//! checks, so the layout targets start from a batch the SDK's builder wrote and patch
//! it: every check of `Batch::parse` is then one mutation away.

use arbitrary::Arbitrary;
use mediation_adapter_sdk::layout::{FLAG_ACK_REQUESTED, FLAG_BINARY};
use mediation_adapter_sdk::{BatchBuilder, Item, Kind};

/// One item to write with [`BatchBuilder`]; a `None` field stays absent.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct ItemSpec {
    /// The kind, taken modulo the five kinds so that every value names one.
    pub kind: u8,
    /// The binary flag.
    pub binary: bool,
    /// The ack-requested flag.
    pub ack_requested: bool,
    /// The sequence, both words.
    pub sequence: u64,
    /// The id.
    pub id: Option<String>,
    /// The client id.
    pub client_id: Option<String>,
    /// The destination.
    pub destination: Option<String>,
    /// The key, which may be binary.
    pub key: Option<Vec<u8>>,
    /// The content type.
    pub content_type: Option<String>,
    /// The headers in order; names may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl ItemSpec {
    /// The item's kind.
    #[must_use]
    pub fn kind(&self) -> Kind {
        match self.kind % 5 {
            0 => Kind::Data,
            1 => Kind::Subscribe,
            2 => Kind::Unsubscribe,
            3 => Kind::Ack,
            _ => Kind::Resume,
        }
    }

    /// The flags word the item is written with: its kind and its two flags.
    #[must_use]
    pub fn flags(&self) -> u32 {
        let mut flags = self.kind() as u32;
        if self.binary {
            flags |= FLAG_BINARY;
        }
        if self.ack_requested {
            flags |= FLAG_ACK_REQUESTED;
        }
        flags
    }

    /// Appends the item to `out`.
    pub fn write(&self, out: &mut BatchBuilder) {
        let mut item = out.item(self.kind());
        item.flags(self.flags()).sequence(self.sequence).payload(&self.payload);
        if let Some(id) = &self.id {
            item.id(id);
        }
        if let Some(client_id) = &self.client_id {
            item.client_id(client_id);
        }
        if let Some(destination) = &self.destination {
            item.destination(destination);
        }
        if let Some(key) = &self.key {
            item.key(key);
        }
        if let Some(content_type) = &self.content_type {
            item.content_type(content_type);
        }
        for (name, value) in &self.headers {
            item.header(name, value);
        }
    }

    /// Asserts that `item` reads back exactly as this spec was written.
    ///
    /// # Panics
    /// When a field differs: the layout lost or changed it.
    pub fn assert_read_back(&self, item: &Item<'_>) {
        assert_eq!(item.kind(), self.kind());
        assert_eq!(item.flags(), self.flags());
        assert_eq!(item.is_binary(), self.binary);
        assert_eq!(item.ack_requested(), self.ack_requested);
        assert_eq!(item.sequence(), self.sequence);
        assert_eq!(item.id(), self.id.as_deref());
        assert_eq!(item.client_id(), self.client_id.as_deref());
        assert_eq!(item.destination(), self.destination.as_deref());
        assert_eq!(item.key(), self.key.as_deref());
        assert_eq!(item.content_type(), self.content_type.as_deref());
        assert_eq!(item.payload(), self.payload.as_slice());
        let headers: Vec<_> = item.headers().collect();
        let expected: Vec<_> = self.headers.iter().map(|(name, value)| (name.as_str(), value.as_slice())).collect();
        assert_eq!(headers, expected);
    }
}

/// The data and index buffers of a batch holding `items` in order.
#[must_use]
pub fn build(items: &[ItemSpec]) -> (Vec<u8>, Vec<u32>) {
    let mut out = BatchBuilder::default();
    for item in items {
        item.write(&mut out);
    }
    out.into_parts()
}

/// One hostile change to a batch's buffers. Positions wrap around the buffer's length.
#[derive(Arbitrary, Debug, Clone)]
pub enum Patch {
    /// Overwrites one index word.
    Word {
        /// The word's position.
        at: usize,
        /// Its new value.
        value: u32,
    },
    /// Moves one index word by a small amount, the way an off-by-one would.
    Nudge {
        /// The word's position.
        at: usize,
        /// Added to the word, wrapping.
        by: i8,
    },
    /// Overwrites one data byte.
    Byte {
        /// The byte's position.
        at: usize,
        /// Its new value.
        value: u8,
    },
    /// Cuts the index to a shorter length.
    TruncateIndex(usize),
    /// Cuts the data to a shorter length.
    TruncateData(usize),
}

/// Applies `patches` in order.
pub fn apply(patches: &[Patch], data: &mut Vec<u8>, index: &mut Vec<u32>) {
    for patch in patches {
        match *patch {
            Patch::Word { at, value } => {
                if let Some(word) = wrapping_mut(index, at) {
                    *word = value;
                }
            }
            Patch::Nudge { at, by } => {
                if let Some(word) = wrapping_mut(index, at) {
                    *word = word.wrapping_add_signed(i32::from(by));
                }
            }
            Patch::Byte { at, value } => {
                if let Some(byte) = wrapping_mut(data, at) {
                    *byte = value;
                }
            }
            Patch::TruncateIndex(len) => index.truncate(len % (index.len() + 1)),
            Patch::TruncateData(len) => data.truncate(len % (data.len() + 1)),
        }
    }
}

fn wrapping_mut<T>(buffer: &mut [T], at: usize) -> Option<&mut T> {
    let len = buffer.len();
    if len == 0 { None } else { buffer.get_mut(at % len) }
}
