//! `loadgen`: the mediation host's load generator.
//!
//! Five modes, each bounded in count and time and stopping by itself, and each
//! sending only to `127.0.0.1`:
//!
//! - `ingest`: keep-alive HTTP `POST` load; requests/s, statuses, latency.
//! - `fanout`: N WebSocket or SSE subscribers and one publisher at a fixed rate,
//!   through the host or straight into a broker the host consumes from;
//!   deliveries/s, per-subscriber counts, losses and reordering, latency.
//! - `idle`: the host's resident memory per idle WebSocket or SSE connection.
//! - `ws-ingest`: WebSocket envelope publishers with a window of unacknowledged
//!   `"ack": true` publishes; confirmed messages/s and ack latency.
//! - `broker-ingest`: the same loop speaking a broker's own protocol (RabbitMQ,
//!   MQTT 5, AMQP 1.0), the baseline the host path is compared with.
//!
//! Results are plain lines followed by one JSON line, so runs can be compared.
//! The commands behind `docs/benchmarks.md` use `loadgen/bench.toml` and, for the
//! brokers, `scripts/bench-brokers.sh` with `loadgen/bench-<broker>.toml`.

mod fanout;
mod histogram;
mod http;
mod idle;
mod ingest;
mod payload;
mod producer;
mod publish;
mod raw;
mod subscriber;
mod target;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::producer::{Destination, Protocol};
use crate::target::{Scheme, Target};

/// Any failure of a run; the load generator only reports it.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Connections opened at the same time while setting up subscribers or idle clients.
pub const CONNECT_PARALLELISM: usize = 8;

/// The longest run any mode accepts.
const MAX_DURATION_SECS: u64 = 300;
/// The most connections any mode opens (the machine allows 20,000 descriptors).
const MAX_CONNECTIONS: usize = 15_000;

/// Load generator for the mediation host's entrypoints (loopback only).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Keep-alive HTTP POST load: N connections sending requests back to back.
    Ingest {
        /// The ingest URL, `http://127.0.0.1:PORT/PATH`.
        #[arg(long)]
        url: String,
        /// Connections, each with one request in flight.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// How long to send, in seconds.
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Request body size in bytes (a JSON object padded to this size).
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
    },
    /// Subscribers on WebSocket or SSE, one publisher at a fixed rate.
    Fanout {
        #[command(flatten)]
        publish: PublishArgs,
        #[command(flatten)]
        stream: StreamArgs,
        /// Subscribers that read.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Messages published per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Publishers, each on its own connection sending one `POST` after another;
        /// the order check is per publisher.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// How long to publish, in seconds.
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Payload size in bytes (a JSON object with sequence and send time, padded).
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
        /// Extra subscribers that connect and never read.
        #[arg(long, default_value_t = 0)]
        stalled: usize,
        /// The admin listener, `http://127.0.0.1:PORT`, to sample the host's memory.
        #[arg(long)]
        admin: Option<String>,
    },
    /// WebSocket envelope publishers, each keeping a window of `"ack": true` publishes unacknowledged.
    WsIngest {
        /// The envelope entrypoint, `ws://127.0.0.1:PORT/PATH`.
        #[arg(long)]
        url: String,
        /// The envelope's `topic`; unset: the entrypoint's `destination`.
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        load: WindowArgs,
    },
    /// A broker's own protocol, with the same loop as `ws-ingest`: the baseline.
    BrokerIngest {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        load: WindowArgs,
    },
    /// Host memory per idle WebSocket or SSE connection.
    Idle {
        #[command(flatten)]
        stream: IdleStreamArgs,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// The admin listener, `http://127.0.0.1:PORT`.
        #[arg(long)]
        admin: String,
        /// The entrypoint's name in `/metrics` (default: `ws` with --ws, `events` with --sse).
        #[arg(long)]
        component: Option<String>,
    },
}

/// Connections, window, size and time of `ws-ingest` and `broker-ingest`.
#[derive(Debug, Args)]
struct WindowArgs {
    /// Connections, each with its own window.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Unconfirmed messages each connection keeps in flight.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Message size in bytes (a JSON object padded to this size; the broker's message body).
    #[arg(long, default_value_t = 100)]
    size: usize,
}

/// A broker spoken to directly.
#[derive(Debug, Args)]
struct BrokerArgs {
    /// The protocol.
    #[arg(long, value_enum)]
    protocol: Protocol,
    /// The broker, host 127.0.0.1: `amqp://user:pass@127.0.0.1:5672/%2f` (RabbitMQ),
    /// `mqtt://127.0.0.1:1883`, `amqp://user:pass@127.0.0.1:5673` (AMQP 1.0).
    #[arg(long)]
    broker_url: String,
    /// RabbitMQ: the routing key; MQTT: the topic; AMQP 1.0: the address (`topic://x`).
    #[arg(long)]
    to: String,
    /// RabbitMQ: the exchange (default: the default exchange, which routes by queue name).
    #[arg(long, default_value = "")]
    exchange: String,
}

impl BrokerArgs {
    fn destination(self) -> Result<Destination, String> {
        Destination::broker(self.protocol, self.broker_url, self.to, self.exchange)
    }
}

/// Where `fanout` publishes: the host by `POST`, or a broker directly.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
struct PublishArgs {
    /// Publish through the host: `http://127.0.0.1:PORT/ingest`.
    #[arg(long, conflicts_with_all = ["protocol", "publish_lines"])]
    publish_url: Option<String>,
    /// Write each payload as one line into this file, typically a FIFO that a broker's
    /// console producer reads (Kafka's), counting it accepted once written.
    #[arg(long, conflicts_with = "protocol")]
    publish_lines: Option<std::path::PathBuf>,
    /// Publish straight into a broker with this protocol (then give --broker-url and --to),
    /// each message waiting for the broker's confirmation before the next.
    #[arg(long, value_enum, requires_all = ["broker_url", "to"])]
    protocol: Option<Protocol>,
    /// See `broker-ingest --broker-url`.
    #[arg(long)]
    broker_url: Option<String>,
    /// See `broker-ingest --to`.
    #[arg(long)]
    to: Option<String>,
    /// See `broker-ingest --exchange`.
    #[arg(long, default_value = "")]
    exchange: String,
}

impl PublishArgs {
    fn publisher(self) -> Result<fanout::Via, String> {
        match (self.publish_url, self.publish_lines, self.protocol, self.broker_url, self.to) {
            (Some(url), None, None, _, _) => Ok(fanout::Via::Host(Target::parse(&url, Scheme::Http)?)),
            (None, Some(path), None, _, _) => Ok(fanout::Via::Lines(path)),
            (None, None, Some(protocol), Some(url), Some(to)) => {
                Ok(fanout::Via::Broker(Destination::broker(protocol, url, to, self.exchange)?))
            }
            _ => Err(String::from("give --publish-url, --publish-lines, or --protocol with --broker-url and --to")),
        }
    }
}

/// Where `fanout` subscribers connect: one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct StreamArgs {
    /// A WebSocket entrypoint, `ws://127.0.0.1:PORT/ws` (raw protocol).
    #[arg(long)]
    subscribe: Option<String>,
    /// An SSE entrypoint, `http://127.0.0.1:PORT/events`.
    #[arg(long)]
    sse: Option<String>,
}

/// Where `idle` connections go: one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct IdleStreamArgs {
    /// A WebSocket entrypoint, `ws://127.0.0.1:PORT/ws`.
    #[arg(long)]
    ws: Option<String>,
    /// An SSE entrypoint, `http://127.0.0.1:PORT/events`.
    #[arg(long)]
    sse: Option<String>,
}

/// `x` rounded to two decimals, for the JSON line.
#[must_use]
pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// CPU time this process has used (user and system), in seconds, from
/// `/proc/self/stat`; the load generator shares the machine with the host, so each
/// report says how much of it the load generator itself took.
#[must_use]
pub fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15 of the line, so 11 and 12 counting from 0
    // after the name; Linux counts them in USER_HZ, which is 100.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// The stream target of `--ws`/`--subscribe` or `--sse`.
fn stream_target(ws: Option<String>, sse: Option<String>) -> Result<Target, String> {
    match (ws, sse) {
        (Some(ws), None) => Target::parse(&ws, Scheme::Ws),
        (None, Some(sse)) => Target::parse(&sse, Scheme::Http),
        _ => Err(String::from("give exactly one of the WebSocket and SSE URLs")),
    }
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_owned()) }
}

fn duration(secs: u64) -> Result<Duration, String> {
    check((1..=MAX_DURATION_SECS).contains(&secs), &format!("--duration-secs must be 1 to {MAX_DURATION_SECS}"))?;
    Ok(Duration::from_secs(secs))
}

fn connections(n: usize, what: &str) -> Result<usize, String> {
    check((1..=MAX_CONNECTIONS).contains(&n), &format!("{what} must be 1 to {MAX_CONNECTIONS}"))?;
    Ok(n)
}

fn window_plan(mode: &'static str, destination: Destination, load: WindowArgs) -> Result<publish::Plan, String> {
    check((1..=4096).contains(&load.window), "--window must be 1 to 4096")?;
    Ok(publish::Plan {
        mode,
        destination,
        connections: connections(load.connections, "--connections")?,
        window: load.window,
        duration: duration(load.duration_secs)?,
        payload_bytes: payload_bytes(load.size)?,
    })
}

fn payload_bytes(n: usize) -> Result<usize, String> {
    check((1..=1024 * 1024).contains(&n), "--payload-bytes must be 1 to 1048576")?;
    Ok(n)
}

async fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Ingest { url, connections: n, duration_secs, payload_bytes: bytes } => {
            let plan = ingest::Plan {
                url: Target::parse(&url, Scheme::Http)?,
                connections: connections(n, "--connections")?,
                duration: duration(duration_secs)?,
                payload_bytes: payload_bytes(bytes)?,
            };
            ingest::run(plan).await
        }
        Command::Fanout {
            publish,
            stream,
            subscribers,
            rate,
            publishers,
            duration_secs,
            payload_bytes: bytes,
            stalled,
            admin,
        } => {
            check((1..=100_000).contains(&rate), "--rate must be 1 to 100000")?;
            check((1..=64).contains(&publishers), "--publishers must be 1 to 64")?;
            let subscribers = connections(subscribers, "--subscribers")?;
            check(subscribers + stalled <= MAX_CONNECTIONS, "--subscribers plus --stalled must be at most 15000")?;
            let plan = fanout::Plan {
                via: publish.publisher()?,
                subscribe: stream_target(stream.subscribe, stream.sse)?,
                subscribers,
                stalled,
                rate,
                publishers,
                duration: duration(duration_secs)?,
                payload_bytes: payload_bytes(bytes)?,
                admin: admin.map(|a| Target::parse(&a, Scheme::Http)).transpose()?,
            };
            fanout::run(plan).await
        }
        Command::WsIngest { url, topic, load } => {
            let destination = Destination::WebSocket { target: Target::parse(&url, Scheme::Ws)?, topic };
            publish::run(window_plan("ws-ingest", destination, load)?).await
        }
        Command::BrokerIngest { broker, load } => {
            publish::run(window_plan("broker-ingest", broker.destination()?, load)?).await
        }
        Command::Idle { stream, connections: n, admin, component } => {
            let default_component = if stream.ws.is_some() { "ws" } else { "events" };
            let plan = idle::Plan {
                url: stream_target(stream.ws, stream.sse)?,
                connections: connections(n, "--connections")?,
                admin: Target::parse(&admin, Scheme::Http)?,
                component: component.unwrap_or_else(|| default_component.to_owned()),
            };
            idle::run(plan).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
