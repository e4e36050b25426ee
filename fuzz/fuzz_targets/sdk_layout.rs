//! The SDK's batch layout reader (`guests/sdk/src/layout.rs`), the side a guest reads the
//! host's input with.
//!
//! Asserts that a batch the builder wrote parses and reads back field for field; that
//! a hostile batch (the written one, patched) is refused with an error or, when
//! accepted, has every accessor answer without panicking; and that copying an accepted
//! batch item by item gives a batch that parses and reads the same.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mediation_adapter_sdk::{Batch, BatchBuilder, Item};
use mediation_fuzz::{ItemSpec, Patch, apply, build};

#[derive(Arbitrary, Debug)]
struct Input {
    items: Vec<ItemSpec>,
    patches: Vec<Patch>,
}

fuzz_target!(|input: Input| {
    let (mut data, mut index) = build(&input.items);
    let written = Batch::parse(&data, &index).expect("a batch the builder wrote parses");
    assert_eq!(written.len(), input.items.len());
    for (item, spec) in written.iter().zip(&input.items) {
        spec.assert_read_back(&item);
    }

    apply(&input.patches, &mut data, &mut index);
    let Ok(batch) = Batch::parse(&data, &index) else {
        return;
    };
    let mut copy = BatchBuilder::default();
    for item in batch.iter() {
        // Debug reads every field, headers included.
        let _ = format!("{item:?}");
        copy.copy(&item);
    }
    let (copy_data, copy_index) = copy.into_parts();
    let copied = Batch::parse(&copy_data, &copy_index).expect("a copy of an accepted batch parses");
    assert_eq!(copied.len(), batch.len());
    for (original, copy) in batch.iter().zip(copied.iter()) {
        assert_same(&original, &copy);
    }
});

fn assert_same(a: &Item<'_>, b: &Item<'_>) {
    assert_eq!(a.flags(), b.flags());
    assert_eq!(a.sequence(), b.sequence());
    assert_eq!(a.id(), b.id());
    assert_eq!(a.client_id(), b.client_id());
    assert_eq!(a.destination(), b.destination());
    assert_eq!(a.key(), b.key());
    assert_eq!(a.content_type(), b.content_type());
    assert_eq!(a.payload(), b.payload());
    assert!(a.headers().eq(b.headers()));
}
