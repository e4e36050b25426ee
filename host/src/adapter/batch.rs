//! The host's side of the batch layout: events into a batch, an adapter's output
//! back into events, with every output tied to the input that produced it so that
//! acknowledgements stay exact.

use bytes::Bytes;
use mediation_adapter_sdk::layout::{Batch, BatchBuilder, Kind};

use super::{Adapter, AdapterError, CallContext, ItemError};
use crate::event::{Event, EventId, Header, Text};
use crate::routing::Direction;

/// Writes `events` into `out` in order.
pub fn encode_events<'a>(events: impl IntoIterator<Item = &'a Event>, out: &mut BatchBuilder) {
    let mut id_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    for e in events {
        let mut w = out.item(Kind::from_flags(e.flags).unwrap_or(Kind::Data));
        w.flags(e.flags).sequence(e.sequence).payload(&e.payload);
        match &e.id {
            EventId::Generated(uuid) => w.id(uuid.hyphenated().encode_lower(&mut id_buf)),
            EventId::Given(text) => w.id(text.as_str()),
        };
        if let Some(v) = &e.client_id {
            w.client_id(v.as_str());
        }
        if let Some(v) = &e.destination {
            w.destination(v.as_str());
        }
        if let Some(v) = &e.key {
            w.key(v);
        }
        if let Some(v) = &e.content_type {
            w.content_type(v.as_str());
        }
        for h in &e.headers {
            w.header(h.name.as_str(), &h.value);
        }
    }
}

/// What an item costs in a call's input beyond its payload and headers: its fixed
/// fields and index entries, as the batch layout lays them out (an estimate).
const ITEM_OVERHEAD: usize = 64;

/// The bytes `event` takes in a call's input (an estimate, for sizing calls).
fn input_bytes(event: &Event) -> usize {
    event.size() + ITEM_OVERHEAD
}

/// The result of mapping a batch of events.
#[derive(Debug, Default)]
pub struct Mapped {
    /// The outputs in order. Each inherits its source, ordering key, receipt time and
    /// a part of its acknowledgement from the input that produced it.
    pub outputs: Vec<Event>,
    /// The inputs the adapter refused, each with the reason, in input order.
    pub refused: Vec<(Event, ItemError)>,
    /// A call that failed as a whole (trap, deadline, memory cap, invalid output):
    /// the inputs it held and every input after them, untouched, so that the caller
    /// can fail or retry each of them. The inputs before them were mapped.
    pub failed: Option<(Vec<Event>, AdapterError)>,
}

impl Adapter {
    /// Maps `inputs` through the adapter, in order, in calls of at most
    /// `max_call_bytes` of input each (an input larger than that gets a call of its
    /// own). A call's deadline and memory cap are the guest's budget for one call, so
    /// they must not depend on how many events happened to queue up behind a slow
    /// moment: a burst of large events is mapped as several calls, not failed as one.
    /// After a call that fails as a whole, nothing more is mapped.
    ///
    /// An input that produced no output and no error was consumed (a control frame, a
    /// filtered record): its acknowledgement is settled as delivered.
    pub fn map(&self, direction: Direction, ctx: &CallContext, inputs: Vec<Event>) -> Mapped {
        let limit = self.shared.config.max_call_bytes;
        let mut mapped = Mapped { outputs: Vec::with_capacity(inputs.len()), ..Mapped::default() };
        let mut rest = inputs;
        while !rest.is_empty() {
            // The longest prefix within the limit, and at least one input.
            let (mut take, mut bytes) = (0, 0);
            for event in &rest {
                let size = input_bytes(event);
                if take > 0 && bytes + size > limit {
                    break;
                }
                (take, bytes) = (take + 1, bytes + size);
            }
            let later = rest.split_off(take);
            let call = std::mem::replace(&mut rest, later);
            if let Err((mut unmapped, error)) = self.map_call(direction, ctx, call, bytes, &mut mapped) {
                unmapped.append(&mut rest);
                mapped.failed = Some((unmapped, error));
                break;
            }
        }
        mapped
    }

    /// Maps `inputs`, which take `bytes` of input, in one call, adding to `mapped`.
    ///
    /// # Errors
    /// The call failed as a whole; the inputs come back untouched.
    fn map_call(
        &self,
        direction: Direction,
        ctx: &CallContext,
        inputs: Vec<Event>,
        bytes: usize,
        mapped: &mut Mapped,
    ) -> Result<(), (Vec<Event>, AdapterError)> {
        let mut builder = BatchBuilder::with_capacity(inputs.len(), bytes);
        encode_events(&inputs, &mut builder);
        let (data, index) = builder.into_parts();
        let (data, index, outcome) = match self.call(direction, ctx, data, index) {
            Ok(result) => result,
            Err(e) => return Err((inputs, e)),
        };
        let shared = Bytes::from(data);
        let output = match parse_output(&shared, &index, inputs.len(), &outcome.produced, &outcome.errors) {
            Ok(output) => output,
            Err(message) => return Err((inputs, self.invalid(message))),
        };
        self.succeeded();
        let mut errors = outcome.errors.into_iter().peekable();
        let mut items = output.iter();
        for (i, (mut input, produced)) in inputs.into_iter().zip(outcome.produced).enumerate() {
            if errors.peek().is_some_and(|e| e.item as usize == i) {
                if let Some(error) = errors.next() {
                    self.stats().item_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    mapped.refused.push((input, error));
                }
                continue;
            }
            if produced == 0 {
                input.settle(Ok(()));
                continue;
            }
            let ack = input.ack.take();
            for item in items.by_ref().take(produced as usize) {
                let mut event = from_item(&item, &shared, &input);
                event.ack.clone_from(&ack);
                mapped.outputs.push(event);
            }
            // The clones above carry the acknowledgement; this original part is done.
            if let Some(ack) = ack {
                ack.settle(Ok(()));
            }
        }
        Ok(())
    }
}

/// Reads a guest's output batch for a call with `inputs` items: the layout must be valid,
/// and the outcome (`produced` per input, `errors` in input order) must account for
/// every input and output exactly once. Whatever the guest wrote, this never panics.
///
/// # Errors
/// What is wrong with the output, for the adapter's invalid-output error.
pub fn parse_output<'a>(
    data: &'a [u8],
    index: &'a [u32],
    inputs: usize,
    produced: &[u32],
    errors: &[ItemError],
) -> Result<Batch<'a>, String> {
    let output = Batch::parse(data, index).map_err(|e| e.to_string())?;
    check_outcome(inputs, output.len(), produced, errors)?;
    Ok(output)
}

/// Checks that an outcome accounts for every input and output exactly once.
fn check_outcome(inputs: usize, outputs: usize, produced: &[u32], errors: &[ItemError]) -> Result<(), String> {
    if let Some(e) = errors.first().filter(|_| produced.is_empty()) {
        return Err(format!("the guest refused the whole batch: {}", e.message));
    }
    if produced.len() != inputs {
        return Err(format!("outcome counts {} inputs, the batch had {inputs}", produced.len()));
    }
    let total: u64 = produced.iter().map(|&p| u64::from(p)).sum();
    if total != outputs as u64 {
        return Err(format!("outcome claims {total} outputs, the batch has {outputs}"));
    }
    let mut previous = None;
    for e in errors {
        let item = e.item as usize;
        if item >= inputs || produced[item] != 0 || previous.is_some_and(|p| p >= item) {
            return Err(format!("error for item {item} is out of range, out of order, or has outputs"));
        }
        previous = Some(item);
    }
    Ok(())
}

/// An event from an output item, sharing the output buffer; what the item leaves
/// unset comes from the input that produced it.
#[must_use]
pub fn from_item(item: &mediation_adapter_sdk::Item<'_>, data: &Bytes, parent: &Event) -> Event {
    // `Batch::parse` checked that text spans are UTF-8.
    let text = |s: &str| Text::from_utf8(data.slice_ref(s.as_bytes())).unwrap_or_default();
    Event {
        id: item.id().map_or_else(|| parent.id.clone(), |id| EventId::Given(text(id))),
        kind: parent.kind,
        source: parent.source,
        ordering_key: parent.ordering_key,
        client_id: item.client_id().map(text),
        destination: item.destination().map(text),
        key: item.key().map(|k| data.slice_ref(k)),
        content_type: item.content_type().map(text),
        headers: item.headers().map(|(k, v)| Header { name: text(k), value: data.slice_ref(v) }).collect(),
        payload: data.slice_ref(item.payload()),
        flags: item.flags(),
        sequence: item.sequence(),
        received_at: parent.received_at,
        ack: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::ErrorKind;

    fn error(item: u32) -> ItemError {
        ItemError { item, kind: ErrorKind::Malformed, message: String::from("bad") }
    }

    #[test]
    fn an_outcome_must_account_for_every_item() {
        assert_eq!(check_outcome(3, 3, &[1, 0, 2], &[error(1)]), Ok(()));
        assert!(check_outcome(3, 3, &[1, 2], &[]).expect_err("short").contains("counts 2 inputs"));
        assert!(check_outcome(2, 3, &[1, 1], &[]).expect_err("extra").contains("claims 2 outputs, the batch has 3"));
        assert!(check_outcome(2, 2, &[1, 1], &[error(1)]).is_err(), "an error item with outputs");
        assert!(check_outcome(2, 0, &[0, 0], &[error(1), error(0)]).is_err(), "errors out of order");
        assert!(check_outcome(2, 0, &[0, 0], &[error(7)]).is_err(), "error past the end");
        assert!(check_outcome(2, 0, &[], &[error(0)]).expect_err("refused").contains("whole batch"));
    }
}
