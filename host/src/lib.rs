//! Mediation Host: a WebAssembly-extensible protocol mediation host.
//!
//! Clients reach the host through entrypoints (WebSocket, SSE, HTTP GET, HTTP POST);
//! brokers through endpoints (Kafka, RabbitMQ, MQTT 5, Solace, AMQP 1.0). Routes say
//! what goes where. Each protocol's framing and metadata mapping is a WebAssembly
//! component loaded at startup (`adapter`). `docs/architecture.md` walks through the
//! data flow; this crate's modules are its nouns.

pub mod adapter;
pub mod admin;
pub mod bus;
pub mod component;
pub mod config;
pub mod endpoints;
pub mod entrypoints;
pub mod event;
pub mod host;
pub mod mapping;
pub mod metrics;
pub mod packet_log;
pub mod pipeline;
pub mod readiness;
pub mod reload;
pub mod routing;
pub mod server;
pub mod shutdown;
