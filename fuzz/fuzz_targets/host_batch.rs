//! The host's side of the batch layout (`host/src/adapter/batch.rs`): events written
//! into a batch for a guest, and a guest's output read back into events.
//!
//! Asserts that events survive `encode_events`, `parse_output` and `from_item` field for
//! field; and that for hostile output (a written batch, patched, with an arbitrary
//! outcome) `parse_output` either refuses it or accepts only an outcome that accounts
//! for every input and output once, whose items then become events that hold exactly
//! the item's fields, without panicking.

#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mediation_adapter_sdk::Item;
use mediation_fuzz::{ItemSpec, Patch, apply, build};
use mediation_host::adapter::{ErrorKind, ItemError, encode_events, from_item, parse_output};
use mediation_host::event::{Event, EventId, Header, Text};
use mediation_host::routing::ComponentId;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Events the host sends to a guest.
    events: Vec<ItemSpec>,
    /// What a guest answers: items, then patches to them.
    outputs: Vec<ItemSpec>,
    patches: Vec<Patch>,
    /// The number of inputs of the call the output answers.
    inputs: u8,
    /// The outcome: outputs per input and refused inputs.
    produced: Vec<u32>,
    errors: Vec<u32>,
    /// Makes the last count agree with the number of outputs, so that the checks past
    /// the count are reached too.
    fit: bool,
}

fuzz_target!(|input: Input| {
    round_trip(&input.events);
    hostile_output(&input);
});

fn event(spec: &ItemSpec) -> Event {
    let mut event = Event::new(ComponentId(0), Bytes::from(spec.payload.clone()));
    if let Some(id) = &spec.id {
        event.id = EventId::Given(Text::from(id.as_str()));
    }
    event.client_id = spec.client_id.as_deref().map(Text::from);
    event.destination = spec.destination.as_deref().map(Text::from);
    event.key = spec.key.clone().map(Bytes::from);
    event.content_type = spec.content_type.as_deref().map(Text::from);
    event.headers = spec.headers.iter().map(|(name, value)| Header::new(name.as_str(), value.clone())).collect();
    event.flags = spec.flags();
    event.sequence = spec.sequence;
    event
}

/// The host writes events, a guest passes the batch through unchanged, the host reads it.
fn round_trip(specs: &[ItemSpec]) {
    let events: Vec<Event> = specs.iter().map(event).collect();
    let mut builder = mediation_adapter_sdk::BatchBuilder::default();
    encode_events(&events, &mut builder);
    let (data, index) = builder.into_parts();
    let data = Bytes::from(data);
    let produced = vec![1; events.len()];
    let output = parse_output(&data, &index, events.len(), &produced, &[]).expect("the host's own batch is valid");
    assert_eq!(output.len(), events.len());
    for (item, sent) in output.iter().zip(&events) {
        let read = from_item(&item, &data, sent);
        assert_eq!(read.id.to_string(), sent.id.to_string());
        assert_eq!(read.client_id, sent.client_id);
        assert_eq!(read.destination, sent.destination);
        assert_eq!(read.key, sent.key);
        assert_eq!(read.content_type, sent.content_type);
        assert_eq!(read.headers, sent.headers);
        assert_eq!(read.payload, sent.payload);
        assert_eq!(read.flags, sent.flags);
        assert_eq!(read.sequence, sent.sequence);
    }
}

fn hostile_output(input: &Input) {
    let (mut data, mut index) = build(&input.outputs);
    apply(&input.patches, &mut data, &mut index);
    let inputs = usize::from(input.inputs);
    let mut produced = input.produced.clone();
    if input.fit
        && let Some((last, others)) = produced.split_last_mut()
    {
        let others: u64 = others.iter().map(|&p| u64::from(p)).sum();
        let wanted = (input.outputs.len() as u64).saturating_sub(others);
        *last = u32::try_from(wanted).unwrap_or(u32::MAX);
    }
    let errors: Vec<ItemError> = input
        .errors
        .iter()
        .map(|&item| ItemError { item, kind: ErrorKind::Malformed, message: String::from("refused") })
        .collect();
    let data = Bytes::from(data);
    let Ok(output) = parse_output(&data, &index, inputs, &produced, &errors) else {
        return;
    };

    // What `Adapter::map` relies on to hand each output to its input's acknowledgement.
    assert_eq!(produced.len(), inputs);
    assert_eq!(produced.iter().map(|&p| u64::from(p)).sum::<u64>(), output.len() as u64);
    for pair in errors.windows(2) {
        assert!(pair[0].item < pair[1].item, "errors in input order, once each");
    }
    for error in &errors {
        assert_eq!(produced[error.item as usize], 0, "a refused input has no outputs");
    }

    let parent = Event::new(ComponentId(7), Bytes::new());
    for item in output.iter() {
        assert_event_holds(&from_item(&item, &data, &parent), &item, &parent);
    }
}

/// The event holds exactly the item's fields, the parent's id when the item has none.
fn assert_event_holds(event: &Event, item: &Item<'_>, parent: &Event) {
    match item.id() {
        Some(id) => assert_eq!(event.id.to_string(), id),
        None => assert_eq!(event.id, parent.id),
    }
    assert_eq!(event.client_id.as_ref().map(Text::as_str), item.client_id());
    assert_eq!(event.destination.as_ref().map(Text::as_str), item.destination());
    assert_eq!(event.key.as_deref(), item.key());
    assert_eq!(event.content_type.as_ref().map(Text::as_str), item.content_type());
    assert_eq!(event.payload, item.payload());
    let headers: Vec<_> = event.headers.iter().map(|h| (h.name.as_str(), &h.value[..])).collect();
    assert_eq!(headers, item.headers().collect::<Vec<_>>());
    assert_eq!((event.flags, event.sequence), (item.flags(), item.sequence()));
    assert_eq!(event.source, parent.source);
}
