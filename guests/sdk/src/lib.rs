//! The Mediation Host adapter SDK.
//!
//! [`layout`] reads and writes the packed batch layout that crosses the adapter
//! boundary; the host uses it too. With the `guest` feature (on by default),
//! [`guest`] turns an [`guest::Adapter`] implementation into a WebAssembly component
//! through [`export_adapter!`], so an adapter author writes one function per
//! direction and per item, and never touches offsets.

pub mod layout;

#[cfg(feature = "guest")]
pub mod guest;

#[cfg(feature = "guest")]
pub mod json;

pub use layout::{Batch, BatchBuilder, Item, ItemWriter, Kind, LayoutError};
