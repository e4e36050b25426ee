//! The Mediation Host adapter SDK.
//!
//! [`layout`] reads and writes the packed batch layout that crosses the adapter
//! boundary; the host uses it too, and [`solace`] (Solace topic rules and their
//! translation to MQTT), which the Solace adapter and the host's Solace endpoint share. With the `guest` feature (on by default),
//! [`guest`] turns an [`guest::Adapter`] implementation into a WebAssembly component
//! through [`export_adapter!`], so an adapter author writes one function per
//! direction and per item, and never touches offsets; [`guest::testing`] runs an
//! adapter in its crate's unit tests the way the host does.
//!
//! The same feature brings the mappings that several adapters share, so that they
//! behave alike: [`json`] renders events for the entrypoint adapters' clients, and
//! [`amqp`] and [`mqtt`] map events to and from the records of the host's AMQP 1.0
//! and MQTT 5 clients for the endpoint adapters. Adapter crates cannot share code
//! with each other: each exports the component's `mapping` functions, so linking one
//! into another fails on duplicate symbols.

pub mod layout;

pub mod solace;

#[cfg(feature = "guest")]
pub mod guest;

#[cfg(feature = "guest")]
pub mod json;

#[cfg(feature = "guest")]
pub mod amqp;

#[cfg(feature = "guest")]
pub mod mqtt;

pub use layout::{Batch, BatchBuilder, Item, ItemWriter, Kind, LayoutError};
