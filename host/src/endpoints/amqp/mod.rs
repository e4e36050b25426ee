//! The `amqp` endpoint: AMQP 1.0, e.g. JMS brokers such as ActiveMQ Artemis, through
//! `fe2o3-amqp`. `type = "jms"` is an alias.
//!
//! As a **target** it drains its queue in batches, maps each batch through its adapter
//! (by default `builtin:jms`, which writes the JMS annotations) and sends each record on
//! the sender link of its address (one link per address, cached for the connection).
//! Sends are unsettled: an event succeeds only on the broker's `accepted` outcome;
//! `rejected`, `released` and `modified` fail it naming the address and the broker's
//! error, no outcome in time fails it as a timeout (HTTP 504), and while the broker is
//! unreachable deliveries fail at once as *unavailable* (HTTP 503). `delivery =
//! "settled"` sends pre-settled instead (at most once).
//!
//! As a **source**, only while routes leave the endpoint, it attaches one receiver per
//! configured queue and topic with link credit `prefetch` (see `receive.rs`): a message
//! is accepted only after every target accepted its event, released (redelivered) when
//! one did not, and rejected when the adapter refused it.
//!
//! One supervisor task owns the connection. It connects (TCP, TLS, SASL), begins a
//! session for sending and, when consuming, one for the receivers; then it reports the
//! endpoint ready. When anything breaks it reports why on `/readyz`, drops the
//! connection and builds everything again, with exponential backoff (see [`link::supervise`]).

mod config;
mod message;
mod publish;
mod receive;

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{self, ErrorCondition};
use fe2o3_amqp::types::messaging::{Source, Target, TerminusDurability, TerminusExpiryPolicy};
use fe2o3_amqp::types::primitives::{Array, Symbol};
use fe2o3_amqp::{Connection, Receiver, Session};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::{AmqpConfig, DeliveryMode, parse_url};

use crate::endpoints::ConsumerMode;

use crate::adapter::{self, Adapter};
use crate::component::{ComponentContext, StartError};
use crate::endpoints::Endpoint as _;
use crate::endpoints::link::{self, Ended, Health};
use crate::pipeline::TargetSender;

/// How often a connected session checks whether routes from the endpoint changed.
const ROUTES_TICK: Duration = Duration::from_millis(200);
/// How long detaching a receiver or closing the connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest AMQP frame the host accepts; larger messages span several frames.
const MAX_FRAME_BYTES: u32 = 256 * 1024;

/// What the supervisor, the publisher and the receivers share.
struct Endpoint {
    /// Everything a component needs from the host.
    ctx: ComponentContext,
    /// The endpoint's settings.
    config: AmqpConfig,
    /// The broker address with the password redacted: the only form logged.
    url: String,
    /// Where and how to connect, credentials included; never printed.
    broker: config::Broker,
    /// The mapping, both directions.
    adapter: Adapter,
    /// Whether it is connected, and why not.
    health: Health,
    /// The container id: the broker's JMS client id, stable per host instance.
    container_id: String,
    /// The name of topic subscriptions.
    subscription: String,
    /// The ordering key base of everything consumed: one address keeps one order.
    ordering_seed: u64,
}

/// What the publisher takes from one connection.
struct Shared {
    /// The sending session, taken by the publisher once.
    session: Mutex<Option<SessionHandle<()>>>,
    /// Woken when a send finds the connection broken, so the supervisor acts at once.
    broken: Notify,
    /// Asks the supervisor, which owns the connection, for a fresh sending session.
    sessions: mpsc::Sender<SessionRequest>,
    /// Where the supervisor reads those requests; taken when it serves the connection.
    requests: Mutex<Option<mpsc::Receiver<SessionRequest>>>,
}

/// A request for a fresh session, answered with the session or why not.
type SessionRequest = oneshot::Sender<Result<SessionHandle<()>, String>>;

impl Shared {
    /// A fresh session on the same connection.
    ///
    /// # Errors
    /// The connection is gone, or the broker refused the session.
    async fn new_session(&self) -> Result<SessionHandle<()>, String> {
        let (reply, answer) = oneshot::channel();
        self.sessions.send(reply).await.map_err(|_| String::from("the connection is closing"))?;
        answer.await.unwrap_or_else(|_| Err(String::from("the connection is closing")))
    }
}

/// One open connection and what was attached on it.
struct Opened {
    /// The connection; dropping it ends everything on it.
    connection: ConnectionHandle<()>,
    /// The receiving session, kept while its receivers run.
    receiving: Option<SessionHandle<()>>,
    /// One receiver per consumed address, with the address.
    receivers: Vec<(Receiver, String)>,
    /// Shared with the publisher.
    shared: Arc<Shared>,
}

/// The endpoint as [`link::supervise`] drives it.
struct Supervisor {
    /// What the tasks of the endpoint share.
    endpoint: Arc<Endpoint>,
    /// Carries the live connection's sending session to the publisher.
    link: watch::Sender<Option<Arc<Shared>>>,
}

impl link::Connector for Supervisor {
    type Connection = Opened;

    fn endpoint(&self) -> (&ComponentContext, &Health, &str) {
        (&self.endpoint.ctx, &self.endpoint.health, &self.endpoint.url)
    }

    fn wants_consumer(&self) -> bool {
        self.endpoint.wants_receivers()
    }

    async fn open(&self, receive: bool) -> Result<Opened, String> {
        let deadline = Instant::now() + Duration::from_millis(self.endpoint.config.connect_timeout_ms);
        self.endpoint.open(receive, deadline).await.map_err(|e| e.to_string())
    }

    async fn serve(&self, opened: Opened, stop: &CancellationToken) -> Ended {
        let Opened { mut connection, receiving, receivers, shared } = opened;
        tracing::info!(url = %self.endpoint.url, receivers = receivers.len(), "connected to the AMQP 1.0 broker");
        self.link.send_replace(Some(Arc::clone(&shared)));
        let ended = self.endpoint.serve(&mut connection, receivers, &shared, stop).await;
        self.link.send_replace(None);
        drop(receiving);
        ended
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    /// A step of connecting or attaching failed.
    #[error("{step}: {message}")]
    Broker {
        /// What was being done.
        step: String,
        /// The client library's error, or the broker's condition and description.
        message: String,
    },
    /// The attempt took longer than `connect_timeout_ms`.
    #[error("no answer within {0} ms")]
    Timeout(u64),
}

/// Attaches the step to an error.
fn step<E: std::fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> OpenError {
    let step = what.into();
    move |e| OpenError::Broker { step, message: e.to_string() }
}

/// Loads the adapter, starts the supervisor and the publishing task.
///
/// # Errors
/// When the adapter cannot be loaded, the URL or the TLS files are bad, or routes
/// leave the endpoint but it has no queue or topic to consume.
pub fn spawn(ctx: ComponentContext, config: &AmqpConfig) -> Result<(TargetSender, JoinHandle<()>), StartError> {
    let span = ctx.endpoint_span("amqp");
    let adapter = ctx.load_adapter(&config.adapter, adapter::Role::Endpoint, &config.adapter_settings())?;
    let broker = config.broker().map_err(|e| ctx.refuse(e))?;
    let routed = ctx.is_routed();
    if routed && config.queues.is_empty() && config.topics.is_empty() {
        return Err(ctx.refuse(String::from(
            "routes leave this endpoint, so it consumes, but it has nothing to consume: set `queues` or `topics`",
        )));
    }
    let url = config.broker_label.clone().unwrap_or_else(|| config.display_url());
    let container_id = config
        .container_id
        .clone()
        .unwrap_or_else(|| format!("mediation-host.{}.{}", ctx.host.instance_id(), ctx.name));
    let subscription = config.subscription.clone().unwrap_or_else(|| ctx.name.to_string());
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let endpoint = Arc::new(Endpoint {
        ordering_seed: ctx.ordering_key(&container_id),
        health: Health::connecting(Arc::clone(&ctx.name), Arc::clone(&ctx.readiness), format!("connecting to {url}")),
        ctx,
        config: config.clone(),
        url,
        broker,
        adapter,
        container_id,
        subscription,
    });
    let task = link::run(
        {
            let endpoint = Arc::clone(&endpoint);
            move |link| Supervisor { endpoint, link }
        },
        move |watching| publish::Publisher::new(endpoint, watching).run(rx),
    );
    Ok((tx, tokio::spawn(task.instrument(span))))
}

impl Endpoint {
    /// True when the endpoint should receive: routes leave it, it has addresses to
    /// consume, and the host is not stopping its sources.
    fn wants_receivers(&self) -> bool {
        let can = !self.config.queues.is_empty() || !self.config.topics.is_empty();
        can && !self.ctx.shutdown.sources.is_cancelled() && self.ctx.is_routed()
    }

    /// Connects, begins the sending session and, when `receive`, attaches the receivers,
    /// all before `deadline`.
    async fn open(&self, receive: bool, deadline: Instant) -> Result<Opened, OpenError> {
        let timed_out = || OpenError::Timeout(self.config.connect_timeout_ms);
        let (mut connection, shared) =
            tokio::time::timeout_at(deadline, self.connect()).await.map_err(|_| timed_out())??;
        if !receive {
            return Ok(Opened { connection, receiving: None, receivers: Vec::new(), shared });
        }
        let mut receivers = Vec::new();
        let attached = tokio::time::timeout_at(deadline, async {
            let mut session = Session::begin(&mut connection).await.map_err(step("beginning the receiving session"))?;
            let topics = self.config.topics.len();
            for (address, topic) in self.config.sources() {
                let receiver = self.attach(&mut session, &address, topic, topics).await?;
                receivers.push((receiver, address));
            }
            Ok(session)
        })
        .await
        .unwrap_or_else(|_| Err(timed_out()));
        match attached {
            Ok(session) => Ok(Opened { connection, receiving: Some(session), receivers, shared }),
            Err(e) => {
                // Closing the connection before the attached receivers drop: a dropped
                // receiver closes its link, which would delete a durable subscription.
                close(&mut connection).await;
                drop(receivers);
                Err(e)
            }
        }
    }

    /// Connects (TCP, TLS, SASL, `open`) and begins the sending session.
    async fn connect(&self) -> Result<(ConnectionHandle<()>, Arc<Shared>), OpenError> {
        let broker = &self.broker;
        let tcp = tokio::net::TcpStream::connect((broker.host.as_str(), broker.port))
            .await
            .map_err(step(format!("connecting to {}:{}", broker.host, broker.port)))?;
        // Small frames (dispositions, flow) should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let profile = match &broker.login {
            Some((username, password)) => {
                SaslProfile::Plain { username: username.clone(), password: password.expose().to_owned() }
            }
            None => SaslProfile::Anonymous,
        };
        let hostname = self.config.virtual_host.as_deref().unwrap_or(&broker.host);
        let mut builder = Connection::builder()
            .container_id(self.container_id.clone())
            .scheme("amqp")
            .hostname(hostname)
            .sasl_hostname(broker.host.as_str())
            .max_frame_size(MAX_FRAME_BYTES)
            .sasl_profile(profile);
        if self.config.idle_timeout_ms > 0 {
            builder = builder.idle_time_out(self.config.idle_timeout_ms);
        }
        let mut connection = match &broker.tls {
            Some((connector, server)) => {
                let stream =
                    connector.connect(server.clone(), tcp).await.map_err(step("the TLS handshake with the broker"))?;
                builder.open_with_stream(stream).await
            }
            None => builder.open_with_stream(tcp).await,
        }
        .map_err(|e| OpenError::Broker {
            step: String::from("opening the AMQP connection"),
            message: open_error(&e),
        })?;
        let sending = Session::begin(&mut connection).await.map_err(step("beginning the sending session"))?;
        let (sessions, requests) = mpsc::channel(1);
        let shared = Shared {
            session: Mutex::new(Some(sending)),
            broken: Notify::new(),
            sessions,
            requests: Mutex::new(Some(requests)),
        };
        Ok((connection, Arc::new(shared)))
    }

    /// Attaches the receiver of `address`. A topic gets a subscription: durable when
    /// `durable_subscription`, shared by all instances in `shared` mode.
    async fn attach(
        &self,
        session: &mut SessionHandle<()>,
        address: &str,
        topic: bool,
        topics: usize,
    ) -> Result<Receiver, OpenError> {
        let mut source = Source::builder().address(address.to_owned());
        let name = if topic {
            let mut capabilities = vec![Symbol::from("topic")];
            if self.config.consumer == ConsumerMode::Shared {
                // Artemis (and Qpid JMS) name a `shared` + `global` subscription after
                // the link alone, so instances with different container ids share it.
                capabilities.extend([Symbol::from("shared"), Symbol::from("global")]);
            }
            source = source.capabilities(Array::from(capabilities));
            if self.config.durable_subscription {
                source = source.durable(TerminusDurability::UnsettledState).expiry_policy(TerminusExpiryPolicy::Never);
            }
            if topics == 1 { self.subscription.clone() } else { format!("{}.{address}", self.subscription) }
        } else {
            format!("{}.{address}", self.container_id)
        };
        Receiver::builder()
            .name(name)
            .source(source.build())
            .target(Target::builder().build())
            .auto_accept(false)
            // Granted by the receiver itself (see `receive.rs`).
            .credit_mode(CreditMode::Manual)
            .attach(session)
            .await
            .map_err(|e| OpenError::Broker {
                step: format!("attaching a receiver to `{address}`"),
                message: match &e {
                    fe2o3_amqp::link::ReceiverAttachError::RemoteClosedWithError(error) => {
                        format!("the broker refused: {}", describe(error))
                    }
                    other => other.to_string(),
                },
            })
    }

    /// Serves the connection (the publisher sends on it; the receivers run here) until
    /// it breaks, the routes change whether it should receive, or `stop`.
    async fn serve(
        self: &Arc<Self>,
        connection: &mut ConnectionHandle<()>,
        receivers: Vec<(Receiver, String)>,
        shared: &Shared,
        stop: &CancellationToken,
    ) -> Ended {
        let receiving = !receivers.is_empty();
        let mut running: FuturesUnordered<_> = receivers
            .into_iter()
            .map(|(receiver, address)| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                (self.ordering_seed, &address).hash(&mut hasher);
                receive::Consumer::new(Arc::clone(self), address, hasher.finish()).run(receiver)
            })
            .collect();
        let mut tick = tokio::time::interval(ROUTES_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut requests = lock(&shared.requests).take();
        let ended = loop {
            tokio::select! {
                () = stop.cancelled() => break Ended::Stop,
                Some(end) = running.next() => break match end {
                    receive::End::Broken(reason) => Ended::Broken(reason),
                    receive::End::RoutesGone => Ended::RoutesChanged,
                },
                closed = connection.on_close() => {
                    let reason = match closed {
                        Ok(()) => String::from("the broker closed the connection"),
                        Err(fe2o3_amqp::connection::Error::RemoteClosedWithError(error)) => {
                            format!("the broker closed the connection: {}", describe(&error))
                        }
                        Err(e) => e.to_string(),
                    };
                    break Ended::Broken(reason);
                }
                () = shared.broken.notified() => break Ended::Broken(String::from("a send found the connection broken")),
                Some(reply) = next_request(&mut requests) => {
                    let begun = Session::begin(connection).await.map_err(|e| format!("beginning a session: {e}"));
                    let _ = reply.send(begun);
                }
                _ = tick.tick() => {}
            }
            if !self.ctx.shutdown.sources.is_cancelled() && self.wants_receivers() != receiving {
                break Ended::RoutesChanged;
            }
        };
        // Closed while the receivers still exist: dropping a receiver of a live
        // connection closes its link, which would delete a durable subscription, whereas
        // a closed connection only detaches it (receivers that ended detached already).
        close(connection).await;
        ended
    }
}

/// The broker's error as `condition: description`.
fn describe(error: &definitions::Error) -> String {
    let condition = match &error.condition {
        ErrorCondition::AmqpError(e) => Symbol::from(e).0,
        ErrorCondition::ConnectionError(e) => Symbol::from(e).0,
        ErrorCondition::SessionError(e) => Symbol::from(e).0,
        ErrorCondition::LinkError(e) => Symbol::from(e).0,
        ErrorCondition::Custom(s) => s.0.clone(),
    };
    match &error.description {
        Some(description) => format!("{condition}: {description}"),
        None => condition,
    }
}

/// A link's failure in words, with the broker's error when it gave one.
fn link_error(error: &fe2o3_amqp::link::LinkStateError) -> String {
    use fe2o3_amqp::link::LinkStateError;
    match error {
        LinkStateError::RemoteDetachedWithError(e) => format!("the broker detached the link: {}", describe(e)),
        LinkStateError::RemoteClosedWithError(e) => format!("the broker closed the link: {}", describe(e)),
        other => other.to_string(),
    }
}

/// An open error, with SASL failures said in words.
fn open_error(error: &fe2o3_amqp::connection::OpenError) -> String {
    match error {
        fe2o3_amqp::connection::OpenError::SaslError { code, .. } => {
            format!("SASL authentication failed ({code:?}): wrong username or password")
        }
        other => other.to_string(),
    }
}

/// The next request for a session; never, once there can be none.
async fn next_request(requests: &mut Option<mpsc::Receiver<SessionRequest>>) -> Option<SessionRequest> {
    match requests {
        Some(requests) => requests.recv().await,
        None => std::future::pending().await,
    }
}

/// Closes `connection`, which detaches every link on it; the broker redelivers what
/// was not settled.
async fn close(connection: &mut ConnectionHandle<()>) {
    if !connection.is_closed() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close()).await;
    }
}

/// Locks `mutex`, whose data stays valid even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
