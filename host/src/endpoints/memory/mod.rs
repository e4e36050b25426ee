//! The `memory` endpoint: a named topic inside the process.
//!
//! As a target it accepts events (optionally mapping them through an adapter, like a
//! broker endpoint would) and confirms each once the queue of every subscriber (the
//! targets of the routes whose source is this endpoint) took it. With no such route
//! the topic has no subscribers and confirms at once, as a broker topic without
//! consumers would. Nothing survives a restart: it is the quickstart default and a
//! test double for brokers, not storage.
//!
//! The topic delivers to its subscribers itself instead of publishing onto the bus:
//! the bus workers feed the topic, so a topic waiting for room on the bus while a
//! worker waits for room in the topic's queue would hold both until a timeout.

use std::collections::BTreeMap;

use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::adapter::{self, Adapter, AdapterSource};
use crate::component::{Component, ComponentContext, StartError};
use crate::config::Problems;
use crate::endpoints::Endpoint;
use crate::event::{Ack, DeliveryError, Event};
use crate::mapping;
use crate::pipeline::{Delivery, Pipeline, TargetReceiver, TargetSender};
use crate::routing::Direction;

/// `type = "memory"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// An endpoint adapter that maps events on their way into the topic (its
    /// `upstream`). None passes events through natively.
    #[serde(default)]
    pub adapter: Option<AdapterSource>,
    /// Settings passed to the adapter's `configure`.
    #[serde(default)]
    pub adapter_settings: BTreeMap<String, String>,
    /// Deliveries queued before the pipeline waits (and then answers busy).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// The most deliveries mapped in one adapter call.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

const fn default_queue_capacity() -> usize {
    1024
}

const fn default_max_batch() -> usize {
    256
}

impl Component for MemoryConfig {
    fn type_name(&self) -> &'static str {
        "memory"
    }

    fn adapter(&self) -> Option<&AdapterSource> {
        self.adapter.as_ref()
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check(self.queue_capacity > 0, format!("{path}.queue_capacity"), "must be at least 1");
        problems.check(self.max_batch > 0, format!("{path}.max_batch"), "must be at least 1");
    }
}

impl Endpoint for MemoryConfig {
    fn adapter_settings(&self) -> BTreeMap<String, String> {
        self.adapter_settings.clone()
    }

    fn adapter_mut(&mut self) -> Option<&mut AdapterSource> {
        self.adapter.as_mut()
    }

    fn spawn(&self, ctx: ComponentContext) -> Result<(TargetSender, JoinHandle<()>), StartError> {
        Ok(spawn(ctx, self)?)
    }
}

/// A running memory topic.
struct MemoryTopic {
    /// Everything a component needs from the host.
    ctx: ComponentContext,
    /// The optional mapping.
    adapter: Option<Adapter>,
    /// The most deliveries per adapter call.
    max_batch: usize,
    /// The ordering key stamped on what the topic delivers, as a broker source's
    /// partition would be.
    ordering_key: u64,
}

/// Loads the adapter and starts the topic's task.
///
/// # Errors
/// When the adapter cannot be loaded.
pub fn spawn(
    ctx: ComponentContext,
    config: &MemoryConfig,
) -> Result<(TargetSender, JoinHandle<()>), adapter::AdapterError> {
    let adapter = config
        .adapter
        .as_ref()
        .map(|source| ctx.load_adapter(source, adapter::Role::Endpoint, &config.adapter_settings))
        .transpose()?;
    let (tx, rx) = tokio::sync::mpsc::channel(config.queue_capacity);
    let pipeline = ctx.pipeline.request();
    let topic = MemoryTopic { ordering_key: ctx.ordering_key(()), ctx, adapter, max_batch: config.max_batch };
    Ok((tx, tokio::spawn(topic.run(rx, pipeline))))
}

impl MemoryTopic {
    async fn run(self, mut queue: TargetReceiver, pipeline: tokio::sync::oneshot::Receiver<Pipeline>) {
        // Deliveries come from the pipeline, so none arrive before it exists; without
        // one (the host did not start) the queue closes unused.
        let mut pipeline = pipeline.await.ok();
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut log = Vec::new();
        let mut acks = Vec::new();
        loop {
            tokio::select! {
                biased;
                () = self.ctx.shutdown.sources.cancelled(), if pipeline.is_some() => {
                    // Stop delivering, and let go of the pipeline, which holds this
                    // topic's own queue open; deliveries still queued fail as shutting down.
                    pipeline = None;
                }
                n = queue.recv_many(&mut batch, self.max_batch) => {
                    if n == 0 {
                        break;
                    }
                    self.handle(&mut batch, pipeline.as_ref(), &mut log, &mut acks).await;
                    // The packet lines go out before the senders hear of the delivery, as
                    // a hub's do: a POST answered 202 always has its `delivered` line.
                    self.ctx.recorder.flush(&mut log);
                    for ack in acks.drain(..) {
                        ack.settle(Ok(()));
                    }
                }
            }
        }
    }

    /// Delivers `batch`; the acknowledgements of what was delivered go to `acks`, to be
    /// settled once the packet lines are written.
    async fn handle(
        &self,
        batch: &mut Vec<Delivery>,
        pipeline: Option<&Pipeline>,
        log: &mut Vec<u8>,
        acks: &mut Vec<Ack>,
    ) {
        let subscribed = self.ctx.is_routed();
        let runs = mapping::map_batch(&self.ctx.recorder, self.adapter.as_ref(), Direction::Upstream, batch, log);
        for (route, events) in runs {
            for mut event in events {
                let result = match pipeline {
                    _ if !subscribed => Ok(()),
                    None => Err(DeliveryError::ShuttingDown),
                    Some(pipeline) => self.deliver(pipeline, event.detached(), log).await,
                };
                match result {
                    Ok(()) => acks.extend(self.ctx.recorder.delivered(event, &route, log)),
                    Err(error) => self.ctx.recorder.finish(event, &route, Err(error), log),
                }
            }
        }
    }

    /// Delivers a copy of `event` to the topic's subscribers as this topic's own event.
    async fn deliver(&self, pipeline: &Pipeline, mut event: Event, log: &mut Vec<u8>) -> Result<(), DeliveryError> {
        event.source = self.ctx.id;
        event.ordering_key = self.ordering_key;
        pipeline.forward(event, log).await
    }
}
