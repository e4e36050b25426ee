//! Helpers for adapter crates' unit tests: configure an adapter from literal settings,
//! run it over a batch through [`run`] as the host would, and read what it produced.
//!
//! This module is compiled in every build, not only under `cfg(test)`, because a
//! crate's `cfg(test)` code is invisible to the tests of other crates. It adds nothing
//! to a component: the component's code is what its exports reach, and they never reach
//! this module.
//!
//! Two shapes of result serve two styles of test. [`map`] returns the output batch's
//! buffers and the outcome as the host receives it, for tests that look at single
//! errors ([`errors`] lists them with borrowed messages). [`Output`] owns the same with
//! the errors as `(item, kind, message)` tuples, for tests that compare the whole list.
//!
//! ```
//! use mediation_adapter_sdk::guest::testing::{self, Output};
//! use mediation_adapter_sdk::guest::{Adapter, Context, Direction, ItemError, Role, Settings};
//! use mediation_adapter_sdk::{BatchBuilder, Item, Kind};
//!
//! /// Passes every item through.
//! struct Echo;
//!
//! impl Adapter for Echo {
//!     const ROLE: Role = Role::Endpoint;
//!
//!     fn configure(settings: &Settings) -> Result<Self, String> {
//!         settings.only(&[])?;
//!         Ok(Self)
//!     }
//!
//!     fn downstream(&self, _: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
//!         out.copy(item);
//!         Ok(())
//!     }
//! }
//!
//! let echo: Echo = testing::configure(&[]).expect("no settings");
//! assert!(testing::configure::<Echo>(&[("x", "1")]).is_err());
//! let mut input = BatchBuilder::default();
//! input.item(Kind::Data).payload(b"hi");
//! let output = Output::map(&echo, Direction::Downstream, input);
//! assert_eq!(output.produced, vec![1]);
//! assert_eq!(output.frame(0), "hi");
//! ```

use super::bindings::mediation::adapter::types::Outcome;
use super::{Adapter, CallContext, Direction, ErrorKind, Settings, run};
use crate::layout::{Batch, BatchBuilder};

/// Configures an `A` from literal `(key, value)` settings, as the host passes them.
///
/// # Errors
/// The adapter's own message for a bad or unknown setting.
pub fn configure<A: Adapter>(settings: &[(&str, &str)]) -> Result<A, String> {
    let pairs = settings.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
    A::configure(&Settings::new(pairs))
}

/// The context of a call without a client session, on route 0: what an endpoint
/// adapter sees, and an entrypoint adapter whose output does not depend on the session.
fn context() -> CallContext {
    CallContext { route: 0, session: None }
}

/// Runs `adapter` over `input` in `direction`, on route 0 without a client session;
/// returns the output batch's data and index buffers and the outcome.
#[must_use]
pub fn map<A: Adapter>(adapter: &A, direction: Direction, input: BatchBuilder) -> (Vec<u8>, Vec<u32>, Outcome) {
    map_in(adapter, direction, &context(), input)
}

/// [`map`] with the call context `ctx`, for adapters that read the client's session.
#[must_use]
pub fn map_in<A: Adapter>(
    adapter: &A,
    direction: Direction,
    ctx: &CallContext,
    input: BatchBuilder,
) -> (Vec<u8>, Vec<u32>, Outcome) {
    let (data, index) = input.into_parts();
    let (out, outcome) = run(adapter, direction, ctx, &data, &index);
    let (data, index) = out.into_parts();
    (data, index, outcome)
}

/// Maps `input` upstream, hands every record it produced back downstream whole (as the
/// host's broker client delivers a record it consumed), and returns what downstream
/// produced: for endpoint tests that an event survives the trip to the broker and back.
///
/// # Panics
/// When the upstream output is not a valid batch, which is a bug in the SDK.
#[must_use]
pub fn round_trip<A: Adapter>(adapter: &A, input: BatchBuilder) -> (Vec<u8>, Vec<u32>, Outcome) {
    let (data, index, _) = map(adapter, Direction::Upstream, input);
    let records = Batch::parse(&data, &index).expect("upstream output is a valid batch");
    let mut consumed = BatchBuilder::default();
    for record in records.iter() {
        consumed.copy(&record);
    }
    map(adapter, Direction::Downstream, consumed)
}

/// The errors of `outcome` as `(item, kind, message)`, in item order.
#[must_use]
pub fn errors(outcome: &Outcome) -> Vec<(u32, ErrorKind, &str)> {
    outcome.errors.iter().map(|e| (e.item, e.kind, e.message.as_str())).collect()
}

/// What one run returned, owned, so that a test can read the output batch and compare
/// the produced counts and errors as whole lists.
#[derive(Debug)]
pub struct Output {
    /// The output batch's data buffer.
    pub data: Vec<u8>,
    /// The output batch's index buffer.
    pub index: Vec<u32>,
    /// How many output items each input item produced, in input order.
    pub produced: Vec<u32>,
    /// The failed input items as `(item, kind, message)`, in item order.
    pub errors: Vec<(u32, ErrorKind, String)>,
}

impl Output {
    /// Runs `adapter` like [`map`] and keeps the result.
    #[must_use]
    pub fn map<A: Adapter>(adapter: &A, direction: Direction, input: BatchBuilder) -> Self {
        Self::map_in(adapter, direction, &context(), input)
    }

    /// Runs `adapter` like [`map_in`], with the call context `ctx`, and keeps the result.
    #[must_use]
    pub fn map_in<A: Adapter>(adapter: &A, direction: Direction, ctx: &CallContext, input: BatchBuilder) -> Self {
        let (data, index, outcome) = map_in(adapter, direction, ctx, input);
        let errors = outcome.errors.into_iter().map(|e| (e.item, e.kind, e.message)).collect();
        Self { data, index, produced: outcome.produced, errors }
    }

    /// The output batch.
    ///
    /// # Panics
    /// When the output is not a valid batch, which is a bug in the SDK.
    #[must_use]
    pub fn batch(&self) -> Batch<'_> {
        Batch::parse(&self.data, &self.index).expect("adapter output is a valid batch")
    }

    /// The payload of output item `i` as text: for an entrypoint adapter, the frame its
    /// client receives.
    ///
    /// # Panics
    /// When there is no item `i` or its payload is not UTF-8.
    #[must_use]
    pub fn frame(&self, i: usize) -> String {
        String::from_utf8(self.batch().get(i).payload().to_vec()).expect("the frame is UTF-8")
    }
}
