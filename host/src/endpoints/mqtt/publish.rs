//! The target side: publish each mapped batch; the broker's PUBACKs and PUBCOMPs are
//! the outcomes.
//!
//! The client has no per-publish handle to await. Its event loop takes publish requests
//! in the order they were queued and reports each one as `Outgoing::Publish(packet id)`
//! when it writes it (packet id 0 for QoS 0). [`Inflight`] keeps the waiting publishes
//! in that order, learns each one's packet id from those reports, and settles it when
//! the broker's PUBACK or PUBCOMP for that id arrives.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::message::{self, Outgoing};
use super::{Endpoint, Session, config};
use crate::endpoints::target::{self, Pending};
use crate::event::{DeliveryError, Event};
use crate::pipeline::TargetReceiver;

/// The broker's answer to one publish.
#[derive(Debug)]
pub(super) enum Answer {
    /// PUBACK or PUBCOMP with a success code; for QoS 0, written to the connection.
    Confirmed,
    /// A failure reason code, named.
    Refused(String),
    /// The connection ended first, for this reason: it may or may not have arrived.
    Lost(String),
}

/// The publishes of one connection that wait for the broker's answer.
#[derive(Debug, Default)]
pub(super) struct Inflight {
    /// The waiting publishes; see [`Waiting`].
    state: Mutex<Waiting>,
}

/// What [`Inflight`] guards.
#[derive(Debug, Default)]
struct Waiting {
    /// Set once the connection ended: why. Later publishes fail at once.
    lost: Option<String>,
    /// Queued for the event loop, not yet written: in queue order.
    queued: VecDeque<oneshot::Sender<Answer>>,
    /// Written, awaiting PUBACK or PUBCOMP, by packet id (in writing order per id).
    sent: HashMap<u16, VecDeque<oneshot::Sender<Answer>>>,
    /// A packet id whose publish waits for that id to be freed (the client reported
    /// `AwaitAck`): its later `Outgoing::Publish` is not a new publish.
    collision: Option<u16>,
}

impl Inflight {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a publish about to be queued. `Err` with the reason when the
    /// connection already ended.
    fn register(&self) -> Result<oneshot::Receiver<Answer>, String> {
        let mut state = self.lock();
        if let Some(reason) = &state.lost {
            return Err(reason.clone());
        }
        let (tx, rx) = oneshot::channel();
        state.queued.push_back(tx);
        Ok(rx)
    }

    /// Takes back the publish registered last: it could not be queued.
    fn unregister_last(&self) {
        self.lock().queued.pop_back();
    }

    /// The event loop wrote the next queued publish with `pkid` (0: QoS 0, done).
    pub(super) fn sent(&self, pkid: u16) {
        let mut state = self.lock();
        if state.collision == Some(pkid) {
            state.collision = None;
            return;
        }
        let Some(waiter) = state.queued.pop_front() else { return };
        if pkid == 0 {
            let _ = waiter.send(Answer::Confirmed);
        } else {
            state.sent.entry(pkid).or_default().push_back(waiter);
        }
    }

    /// The next queued publish got `pkid`, still in use: it is written once freed.
    pub(super) fn collided(&self, pkid: u16) {
        let mut state = self.lock();
        if let Some(waiter) = state.queued.pop_front() {
            state.sent.entry(pkid).or_default().push_back(waiter);
            state.collision = Some(pkid);
        }
    }

    /// The broker answered the publish with `pkid`.
    pub(super) fn answered(&self, pkid: u16, answer: Answer) {
        let mut state = self.lock();
        if let Some(waiters) = state.sent.get_mut(&pkid)
            && let Some(waiter) = waiters.pop_front()
        {
            let _ = waiter.send(answer);
        }
    }

    /// The connection ended: every waiting publish is lost, later ones fail at once.
    pub(super) fn lose(&self, reason: &str) {
        let mut state = self.lock();
        state.lost = Some(reason.to_owned());
        let queued = std::mem::take(&mut state.queued);
        let sent = std::mem::take(&mut state.sent);
        drop(state);
        for waiter in queued.into_iter().chain(sent.into_values().flatten()) {
            let _ = waiter.send(Answer::Lost(reason.to_owned()));
        }
    }
}

/// Publishes what the pipeline delivers to the endpoint.
pub(super) struct Publisher {
    /// What the tasks of the endpoint share.
    endpoint: Arc<Endpoint>,
    /// The live session, `None` while disconnected.
    link: watch::Receiver<Option<Arc<Session>>>,
    /// How long a batch's publishes may wait for their acknowledgements.
    confirm_timeout: Duration,
}

/// A publish handed to the client, or its outcome when it never got that far.
type Sent = Result<(String, oneshot::Receiver<Answer>), DeliveryError>;

impl Publisher {
    pub(super) fn new(endpoint: Arc<Endpoint>, link: watch::Receiver<Option<Arc<Session>>>) -> Self {
        let confirm_timeout = Duration::from_millis(endpoint.config.confirm_timeout_ms);
        Self { endpoint, link, confirm_timeout }
    }

    /// Runs until the queue closes (the last stage of shutdown).
    pub(super) async fn run(mut self, queue: TargetReceiver) {
        let endpoint = Arc::clone(&self.endpoint);
        let config = &endpoint.config;
        let batches = target::Batches::new(queue, config.max_batch, config.max_message_bytes);
        target::publish(&endpoint.ctx, &endpoint.adapter, batches, &mut self).await;
    }

    /// Publishes every record and returns the future of each one's answer.
    fn start_batch(&self, pending: &[Pending]) -> Vec<target::Outcome> {
        let session = self.link.borrow().clone();
        let Some(session) = session else {
            // Fail fast: a client waiting on a broker that is down should hear so now.
            return target::failed(pending.len(), &self.endpoint.health.unavailable());
        };
        let deadline = Instant::now() + self.confirm_timeout;
        let timeout = self.confirm_timeout;
        pending
            .iter()
            .map(|p| match self.publish(&session, &p.record) {
                Ok((topic, answer)) => {
                    let target = self.target();
                    async move { outcome(&target, &topic, timeout, tokio::time::timeout_at(deadline, answer).await) }
                        .boxed()
                }
                Err(error) => target::refused(error),
            })
            .collect()
    }

    /// Hands `record` to the client. Returns its topic and where its answer comes.
    fn publish(&self, session: &Session, record: &Event) -> Sent {
        let config = &self.endpoint.config;
        let refused = |message: String| DeliveryError::Target { target: self.target(), message };
        let Outgoing { topic, qos, retain, properties } =
            message::to_publish(record, config::qos(config.qos), config.retain).map_err(&refused)?;
        // `max_message_bytes` was checked when the batch was taken (`target::Batches`).
        let size = record.payload.len();
        let outgoing = Outgoing { topic, qos, retain, properties };
        if let Some(max) = session.max_packet_bytes
            && outgoing.packet_bytes(size) > max
        {
            return Err(refused(format!(
                "topic `{}`: the message ({size} bytes of payload) would exceed the broker's maximum packet size of \
                 {max} bytes",
                outgoing.topic
            )));
        }
        let answer = session.inflight.register().map_err(|reason| DeliveryError::Unavailable {
            target: self.target(),
            message: format!("topic `{}`: not sent: {reason}", outgoing.topic),
        })?;
        let Outgoing { topic, qos, retain, properties } = outgoing;
        match session.client.try_publish_with_properties(topic.clone(), qos, retain, record.payload.clone(), properties)
        {
            Ok(()) => Ok((topic, answer)),
            Err(e) => {
                session.inflight.unregister_last();
                Err(DeliveryError::Unavailable {
                    target: self.target(),
                    message: format!("topic `{topic}`: not sent, the client's queue is full or closed ({e})"),
                })
            }
        }
    }

    /// The endpoint's name, as errors name the target.
    fn target(&self) -> String {
        self.endpoint.ctx.name.to_string()
    }
}

impl target::Sender for Publisher {
    fn start(&mut self, pending: &[Pending]) -> impl Future<Output = Vec<target::Outcome>> + Send {
        std::future::ready(self.start_batch(pending))
    }
}

/// The delivery outcome of the answer to a publish to `topic` by endpoint `target`,
/// which waited up to `timeout` for it.
fn outcome(
    target: &str,
    topic: &str,
    timeout: Duration,
    answer: Result<Result<Answer, oneshot::error::RecvError>, tokio::time::error::Elapsed>,
) -> Result<(), DeliveryError> {
    let target = target.to_owned();
    match answer {
        Ok(Ok(Answer::Confirmed)) => Ok(()),
        Ok(Ok(Answer::Refused(reason))) => {
            Err(DeliveryError::Target { target, message: format!("topic `{topic}`: refused by the broker ({reason})") })
        }
        Ok(Ok(Answer::Lost(reason))) => Err(DeliveryError::Unavailable {
            target,
            message: format!(
                "topic `{topic}`: {reason} before the broker acknowledged; it may or may not have arrived"
            ),
        }),
        Ok(Err(_)) => Err(DeliveryError::Unavailable {
            target,
            message: format!("topic `{topic}`: the connection ended before the broker acknowledged"),
        }),
        Err(_) => Err(DeliveryError::Timeout {
            target,
            message: format!(
                "topic `{topic}`: not acknowledged by the broker within {} ms; it may or may not have been delivered",
                timeout.as_millis()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(rx: &mut oneshot::Receiver<Answer>) -> Option<String> {
        rx.try_recv().ok().map(|a| format!("{a:?}"))
    }

    #[test]
    fn answers_reach_publishes_by_packet_id_in_queue_order() {
        let inflight = Inflight::default();
        let mut a = inflight.register().expect("open");
        let mut b = inflight.register().expect("open");
        let mut c = inflight.register().expect("open");
        let mut d = inflight.register().expect("open");
        inflight.sent(1);
        inflight.sent(0);
        assert_eq!(answer(&mut b).as_deref(), Some("Confirmed"), "QoS 0 is done once written");
        inflight.sent(2);
        inflight.collided(1);
        inflight.answered(2, Answer::Refused(String::from("PUBACK QuotaExceeded")));
        assert_eq!(answer(&mut c).as_deref(), Some("Refused(\"PUBACK QuotaExceeded\")"));
        inflight.answered(1, Answer::Confirmed);
        assert_eq!(answer(&mut a).as_deref(), Some("Confirmed"));
        assert_eq!(answer(&mut d), None, "written once id 1 is free");
        inflight.sent(1);
        inflight.answered(1, Answer::Confirmed);
        assert_eq!(answer(&mut d).as_deref(), Some("Confirmed"));
    }

    #[test]
    fn a_lost_connection_fails_what_waits_and_what_comes() {
        let inflight = Inflight::default();
        let mut sent = inflight.register().expect("open");
        let mut queued = inflight.register().expect("open");
        let not_queued = inflight.register().expect("open");
        inflight.unregister_last();
        drop(not_queued);
        inflight.sent(1);
        inflight.lose("gone");
        assert_eq!(answer(&mut sent).as_deref(), Some("Lost(\"gone\")"));
        assert_eq!(answer(&mut queued).as_deref(), Some("Lost(\"gone\")"));
        assert_eq!(inflight.register().expect_err("closed"), "gone");
    }
}
