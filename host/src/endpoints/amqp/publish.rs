//! The target side: send each record of a mapped batch on its address's sender link;
//! the broker's settlements are the outcomes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::link::{SendError, SenderAttachError};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{Body, Outcome};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Sendable, Sender};
use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{DeliveryMode, Endpoint, Shared, describe, lock, message};
use crate::endpoints::target::{self, Pending};
use crate::event::{DeliveryError, Event};
use crate::pipeline::TargetReceiver;

/// Sends what the pipeline delivers to the endpoint.
pub(super) struct Publisher {
    /// What the tasks of the endpoint share.
    endpoint: Arc<Endpoint>,
    /// The live connection's shared part, `None` while disconnected.
    link: watch::Receiver<Option<Arc<Shared>>>,
    /// The sending session and its links, for the connection it was taken from.
    current: Option<Current>,
    /// How long a batch's sends and outcomes may take.
    send_timeout: Duration,
    /// How many batches were started, the current one included.
    batch: u64,
}

/// The publisher's part of one connection.
struct Current {
    /// The connection it belongs to, to notice a new one.
    shared: Arc<Shared>,
    /// The session the sender links are attached on.
    session: SessionHandle<()>,
    /// One sender link per address, attached on first use.
    senders: HashMap<String, Sender>,
    /// Sessions given up after the broker refused a link on them, with their links and
    /// the batch being sent then, kept until the batches whose outcomes may still need
    /// them are done.
    retired: Vec<(u64, SessionHandle<()>, HashMap<String, Sender>)>,
}

/// A failure to get a record onto a link: the event's error, and whether the
/// connection is broken.
struct Failed(DeliveryError, bool);

impl Publisher {
    pub(super) fn new(endpoint: Arc<Endpoint>, link: watch::Receiver<Option<Arc<Shared>>>) -> Self {
        let send_timeout = Duration::from_millis(endpoint.config.send_timeout_ms);
        Self { endpoint, link, current: None, send_timeout, batch: 0 }
    }

    /// Runs until the queue closes (the last stage of shutdown).
    pub(super) async fn run(mut self, queue: TargetReceiver) {
        let endpoint = Arc::clone(&self.endpoint);
        let limit = usize::try_from(endpoint.config.max_message_bytes).unwrap_or(usize::MAX);
        let batches = target::Batches::new(queue, endpoint.config.max_batch, limit);
        target::publish(&endpoint.ctx, &endpoint.adapter, batches, &mut self).await;
    }

    /// Sends every record and returns the future of each one's outcome.
    async fn start_batch(&mut self, pending: &[Pending]) -> Vec<target::Outcome> {
        let endpoint = Arc::clone(&self.endpoint);
        let shared = self.link.borrow().clone();
        let Some(shared) = shared else {
            self.current = None;
            // Fail fast: a client waiting on a broker that is down should hear so now.
            return target::failed(pending.len(), &endpoint.health.unavailable());
        };
        if !self.current.as_ref().is_some_and(|c| Arc::ptr_eq(&c.shared, &shared)) {
            self.current = None;
            let session = lock(&shared.session).take();
            match session {
                Some(session) => {
                    self.current = Some(Current { shared, session, senders: HashMap::new(), retired: Vec::new() });
                }
                None => return target::failed(pending.len(), &endpoint.health.unavailable()),
            }
        }
        self.batch += 1;
        if let Some(current) = &mut self.current {
            // Batches started `IN_FLIGHT_BATCHES` or more before this one have all their
            // outcomes in: the sessions retired while they were sent can go.
            let batch = self.batch;
            current.retired.retain(|(during, ..)| batch - during < target::IN_FLIGHT_BATCHES as u64);
        }
        let deadline = Instant::now() + self.send_timeout;
        let mut outcomes = Vec::with_capacity(pending.len());
        for p in pending {
            outcomes.push(self.start(&p.record, deadline).await);
        }
        outcomes
    }

    /// Sends `record` and returns the future of its outcome, or an error already known.
    async fn start(&mut self, record: &Event, deadline: Instant) -> target::Outcome {
        let target = self.endpoint.ctx.name.to_string();
        let config = &self.endpoint.config;
        let (address, message) = match message::to_amqp(record, config.durable) {
            Ok(out) => out,
            Err(message) => return target::refused(DeliveryError::Target { target, message }),
        };
        let settled = config.delivery == DeliveryMode::Settled;
        let sendable = Sendable::builder().message(message).settled(settled).build();
        let sent = match self.send_on_link(&address, &sendable, deadline).await {
            Ok(sent) => sent,
            Err(Failed(error, broken)) => {
                if broken && let Some(current) = &self.current {
                    current.shared.broken.notify_one();
                }
                return target::refused(error);
            }
        };
        let timeout_ms = self.send_timeout.as_millis();
        async move {
            let failed = |message: String| Err(DeliveryError::Target { target: target.clone(), message });
            match tokio::time::timeout_at(deadline, sent).await {
                Ok(Ok(Outcome::Accepted(_))) => Ok(()),
                Ok(Ok(Outcome::Rejected(rejected))) => failed(match rejected.error {
                    Some(error) => format!("address `{address}`: rejected by the broker: {}", describe(&error)),
                    None => format!("address `{address}`: rejected by the broker"),
                }),
                Ok(Ok(Outcome::Released(_))) => {
                    failed(format!("address `{address}`: released by the broker: not delivered"))
                }
                Ok(Ok(Outcome::Modified(modified))) => failed(format!(
                    "address `{address}`: not delivered, modified by the broker (delivery failed: {}, undeliverable \
                     here: {})",
                    modified.delivery_failed.unwrap_or(false),
                    modified.undeliverable_here.unwrap_or(false)
                )),
                Ok(Err(e)) => Err(DeliveryError::Unavailable {
                    target,
                    message: format!(
                        "address `{address}`: the link failed before the broker settled the message; it may or may \
                         not have been delivered: {e}"
                    ),
                }),
                Err(_) => Err(DeliveryError::Timeout {
                    target,
                    message: format!(
                        "address `{address}`: no outcome from the broker within {timeout_ms} ms; it may or may not \
                         have been delivered"
                    ),
                }),
            }
        }
        .boxed()
    }

    /// Puts `sendable` on the sender link of `address`, attaching it when there is none.
    /// A cached link the broker detached is attached again once.
    async fn send_on_link(
        &mut self,
        address: &str,
        sendable: &Sendable<Body<Value>>,
        deadline: Instant,
    ) -> Result<BoxFuture<'static, Result<Outcome, SendError>>, Failed> {
        let target = self.endpoint.ctx.name.to_string();
        let timeout_ms = self.send_timeout.as_millis();
        let timed_out = || {
            let message =
                format!("address `{address}`: not sent within {timeout_ms} ms (no link credit from the broker)");
            Failed(DeliveryError::Timeout { target: target.clone(), message }, false)
        };
        let Some(current) = self.current.as_mut() else {
            return Err(Failed(self.endpoint.health.unavailable(), false));
        };
        for attempt in 0..2 {
            let sender = match current.senders.get_mut(address) {
                Some(sender) => sender,
                None => {
                    let attached =
                        tokio::time::timeout_at(deadline, self.endpoint.sender(&mut current.session, address))
                            .await
                            .map_err(|_| timed_out())?;
                    let attached = match attached {
                        Ok(attached) => attached,
                        Err(e) => {
                            if matches!(e, SenderAttachError::RemoteClosedWithError(_)) {
                                // Artemis mixes up the next link attached on a session with
                                // the one it just refused; later links go on a fresh session.
                                current.retire(self.batch).await;
                            }
                            return Err(self.endpoint.attach_failed(address, &e));
                        }
                    };
                    current.senders.entry(address.to_owned()).or_insert(attached)
                }
            };
            let sent = tokio::time::timeout_at(deadline, sender.send_batchable_ref(sendable))
                .await
                .map_err(|_| timed_out())?;
            match sent {
                Ok(outcome) => return Ok(outcome.boxed()),
                Err(SendError::MessageSizeExceeded(e)) => {
                    let message = format!("address `{address}`: the message is over the broker's size limit: {e}");
                    return Err(Failed(DeliveryError::Target { target, message }, false));
                }
                Err(e) => {
                    // The link is gone (the broker detached it, or the session ended).
                    current.senders.remove(address);
                    if attempt == 1 || current.session.is_ended() {
                        let why = match &e {
                            SendError::LinkStateError(e) => super::link_error(e),
                            other => other.to_string(),
                        };
                        let message = format!("address `{address}`: not sent: {why}");
                        return Err(Failed(DeliveryError::Unavailable { target, message }, true));
                    }
                }
            }
        }
        Err(Failed(self.endpoint.health.unavailable(), true))
    }
}

impl Current {
    /// Moves on to a fresh session, keeping the current one and its links until the
    /// outcomes of batch `batch` and those before it are in. When none can be had, the
    /// next attach fails on the old one and reports the connection broken.
    async fn retire(&mut self, batch: u64) {
        match self.shared.new_session().await {
            Ok(fresh) => {
                let old = std::mem::replace(&mut self.session, fresh);
                self.retired.push((batch, old, std::mem::take(&mut self.senders)));
            }
            Err(e) => tracing::debug!(error = %e, "no fresh session after a refused link"),
        }
    }
}

impl Endpoint {
    /// Attaches a sender link to `address`. An attach that meets a stale frame of a link
    /// the broker refused just before on the same session (the client then reports an
    /// illegal state) is tried again, once.
    async fn sender(&self, session: &mut SessionHandle<()>, address: &str) -> Result<Sender, SenderAttachError> {
        let mode = match self.config.delivery {
            DeliveryMode::Unsettled => SenderSettleMode::Unsettled,
            DeliveryMode::Settled => SenderSettleMode::Settled,
        };
        let mut retried = false;
        loop {
            let attached = Sender::builder()
                .name(format!("{}.send.{address}", self.container_id))
                .target(address.to_owned())
                .sender_settle_mode(mode.clone())
                .attach(session)
                .await;
            match attached {
                Err(SenderAttachError::IllegalState | SenderAttachError::NonAttachFrameReceived) if !retried => {
                    retried = true;
                }
                other => return other,
            }
        }
    }

    /// The event's error for a failed attach: the broker refusing the address is the
    /// target's answer (502); a session that stopped means the connection is gone.
    fn attach_failed(&self, address: &str, error: &SenderAttachError) -> Failed {
        let target = self.ctx.name.to_string();
        match error {
            SenderAttachError::SessionStopped(_) | SenderAttachError::SessionNotMapped => {
                let message = format!("address `{address}`: the session with the broker ended: {error}");
                Failed(DeliveryError::Unavailable { target, message }, true)
            }
            SenderAttachError::RemoteClosedWithError(e) => Failed(
                DeliveryError::Target {
                    target,
                    message: format!("address `{address}`: the broker refused the link: {}", describe(e)),
                },
                false,
            ),
            other => Failed(
                DeliveryError::Target {
                    target,
                    message: format!("address `{address}`: the broker refused the link: {other}"),
                },
                false,
            ),
        }
    }
}

impl target::Sender for Publisher {
    fn start(&mut self, pending: &[Pending]) -> impl Future<Output = Vec<target::Outcome>> + Send {
        self.start_batch(pending)
    }
}
