//! Network faults between the host and a broker: a Toxiproxy proxy in the path, driven
//! over Toxiproxy's HTTP API, and the scenarios every broker shares (latency, a reset
//! mid-publish, a black hole, a bandwidth limit). `tests/faults.rs` runs them per broker.
//!
//! Each scenario posts all along through an HTTP POST entrypoint ([`Outage`]), applies its
//! fault while the posts go on, takes it away, and checks what a client relies on: every
//! POST answered 2xx is at the broker (read with the broker's own client, on its own
//! address, never through the proxy) and in order, no 2xx came for an event the broker
//! could not have, `/readyz` said what was true, and the host recovered by itself.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::time::Instant;

use super::{Answer, Outage, TestHost, request, start_instance, unique};

/// Toxiproxy's HTTP API (`scripts/brokers.sh up toxiproxy`).
fn api() -> SocketAddr {
    let addr = std::env::var("MEDIATION_TOXIPROXY").unwrap_or_else(|_| String::from("127.0.0.1:8474"));
    addr.parse().unwrap_or_else(|e| panic!("MEDIATION_TOXIPROXY={addr}: {e}"))
}

/// One call of Toxiproxy's API; panics unless it answers `expected`.
async fn call(method: &str, path: &str, body: serde_json::Value, expected: u16) -> serde_json::Value {
    let api = api();
    if tokio::net::TcpStream::connect(api).await.is_err() {
        panic!(
            "Toxiproxy is not reachable at {api}; start it with `scripts/brokers.sh up toxiproxy` (tests never \
             skip a missing component)"
        );
    }
    let body = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
    let reply = request(api, method, path, &[("content-type", "application/json")], body).await;
    assert_eq!(reply.status, expected, "Toxiproxy {method} {path}: {}", reply.text());
    if reply.body.is_empty() { serde_json::Value::Null } else { reply.json() }
}

/// A Toxiproxy proxy: what connects to `listen` is forwarded to the broker, through the
/// toxics added meanwhile.
pub struct Proxy {
    /// Toxiproxy's name for it.
    name: String,
    /// Where the host connects.
    pub listen: SocketAddr,
}

impl Proxy {
    /// Creates proxy `name` on `listen` (`127.0.0.1:0` for any free port) forwarding to
    /// `upstream`, replacing one of that name (left by a test that failed).
    pub async fn create(name: &str, listen: &str, upstream: &str) -> Self {
        let _ = request(api(), "DELETE", &format!("/proxies/{name}"), &[], Bytes::new()).await;
        let created =
            call("POST", "/proxies", json!({ "name": name, "listen": listen, "upstream": upstream }), 201).await;
        let listen = created["listen"].as_str().expect("the proxy's address");
        Self { name: name.to_owned(), listen: listen.parse().expect("an address") }
    }

    /// Adds toxic `toxic` of `kind` with `attributes` to the `stream` (`upstream`: host to
    /// broker, `downstream`: broker to host). Toxiproxy applies it to the connections
    /// already open and to new ones before it answers.
    pub async fn add(&self, toxic: &str, kind: &str, stream: &str, attributes: serde_json::Value) {
        let body = json!({ "name": toxic, "type": kind, "stream": stream, "attributes": attributes });
        call("POST", &format!("/proxies/{}/toxics", self.name), body, 200).await;
    }

    /// Adds `kind` with `attributes` in both directions, as toxics `<kind>-up` and `<kind>-down`.
    pub async fn add_both(&self, kind: &str, attributes: serde_json::Value) {
        self.add(&format!("{kind}-up"), kind, "upstream", attributes.clone()).await;
        self.add(&format!("{kind}-down"), kind, "downstream", attributes).await;
    }

    /// Removes toxic `toxic`.
    pub async fn remove(&self, toxic: &str) {
        call("DELETE", &format!("/proxies/{}/toxics/{toxic}", self.name), serde_json::Value::Null, 204).await;
    }

    /// Removes the toxics [`Proxy::add_both`] added.
    pub async fn remove_both(&self, kind: &str) {
        self.remove(&format!("{kind}-up")).await;
        self.remove(&format!("{kind}-down")).await;
    }

    /// Disabled, the proxy closes every connection it holds and refuses new ones; enabled
    /// again, it listens on the same address.
    pub async fn enable(&self, enabled: bool) {
        call("POST", &format!("/proxies/{}", self.name), json!({ "enabled": enabled }), 200).await;
    }

    /// Deletes the proxy.
    pub async fn delete(&self) {
        call("DELETE", &format!("/proxies/{}", self.name), serde_json::Value::Null, 204).await;
    }
}

/// What the scenarios need of a broker: an endpoint that reaches it through a proxy, and
/// its own client reading what arrived.
pub trait Broker {
    /// The broker's name, in proxy names and messages.
    fn name(&self) -> &'static str;

    /// The address the proxy forwards to.
    fn upstream(&self) -> String;

    /// Where the proxy listens: any free port, unless the broker tells its clients where
    /// to connect (Kafka advertises a fixed address for the proxy).
    fn listen(&self) -> String {
        String::from("127.0.0.1:0")
    }

    /// The `destination` of the HTTP POST entrypoint.
    fn destination(&self) -> String;

    /// The `[endpoints.target]` table, connecting through `proxy`. Its timeouts let an
    /// acknowledgement take several seconds (latency, bandwidth), and its keep-alive makes
    /// the endpoint notice a silent connection within seconds.
    fn endpoint(&self, proxy: SocketAddr) -> String;

    /// The payloads that reached the broker since the last call, read with the broker's
    /// own client on the broker's own address, for at most [`READ_FOR`]: the poster
    /// goes on all along, so "until nothing more comes" might never end.
    fn arrived(&mut self) -> impl Future<Output = Vec<Vec<u8>>>;
}

/// How long the endpoint may take to notice a fault, or the end of one: generous, since
/// it is only there to end a test that would otherwise hang.
const NOTICE: Duration = Duration::from_secs(30);

/// How long one [`Broker::arrived`] reads; what comes later is read by the next call.
pub const READ_FOR: Duration = Duration::from_millis(200);

/// How long the black hole lasts.
const BLACK_HOLE: Duration = Duration::from_secs(30);

/// One scenario's host, proxy and poster, and what the broker received so far.
struct Run<B: Broker> {
    broker: B,
    proxy: Proxy,
    host: TestHost,
    outage: Outage,
    /// Every payload read from the broker so far, with how often it arrived.
    received: Vec<Vec<u8>>,
}

impl<B: Broker> Run<B> {
    /// A proxy in front of the broker, a host whose endpoint goes through it, ready, and a
    /// client posting all along, with a few POSTs acknowledged before any fault.
    async fn start(broker: B) -> Self {
        // A proxy on a fixed address has a fixed name, so that one left by a failed test is replaced.
        let name = format!("mh-{}", broker.name());
        let name = if broker.listen().ends_with(":0") { unique(&name) } else { name };
        let proxy = Proxy::create(&name, &broker.listen(), &broker.upstream()).await;
        let host = start_instance(&format!(
            r#"
            [entrypoints.ingest]
            type = "http_post"
            path = "/ingest"
            destination = "{destination}"

            {endpoint}

            [[routes]]
            source = "ingest"
            target = "target"
            "#,
            destination = broker.destination(),
            endpoint = broker.endpoint(proxy.listen),
        ))
        .await;
        let ready = host.await_ready(200, NOTICE).await;
        assert_eq!(
            ready.status,
            200,
            "the endpoint connects through the proxy to {} (for Kafka, its FAULTS listener): {}",
            broker.upstream(),
            ready.text()
        );
        let outage = Outage::watch(&host, "/ingest");
        outage.await_answers("5 POSTs acknowledged before any fault", NOTICE, |a| acknowledged(a) >= 5).await;
        Self { broker, proxy, host, outage, received: Vec::new() }
    }

    /// Reads what arrived at the broker until `done` holds for it; panics naming `what`
    /// after [`NOTICE`].
    async fn await_broker(&mut self, what: &str, done: impl Fn(&[Vec<u8>]) -> bool) {
        await_arrived(&mut self.broker, &mut self.received, what, done).await;
    }

    /// Waits until `/readyz` answers `status`; returns how long that took.
    async fn await_ready(&self, status: u16, why: &str) -> Duration {
        let started = Instant::now();
        let reply = self.host.await_ready(status, NOTICE).await;
        assert_eq!(reply.status, status, "/readyz {why}: {}", reply.text());
        started.elapsed()
    }

    /// Waits until a POST sent after the `answered` first ones is acknowledged: publishing
    /// resumed; returns how long that took.
    async fn await_resumed(&self, answered: usize) -> Duration {
        let started = Instant::now();
        self.outage.await_acknowledged_after(answered, NOTICE).await;
        started.elapsed()
    }

    /// Ends the run: stops posting, shuts the host down, and checks that every POST
    /// answered 2xx is at the broker, in the order of the answers. Returns the answers and
    /// the readiness changes seen.
    async fn finish(self, fault: &str) -> (Vec<Answer>, Vec<bool>) {
        let Self { mut broker, proxy, host, outage, mut received } = self;
        let (answers, readiness) = outage.finish().await;
        host.host.shutdown().await;
        proxy.delete().await;
        let keys: Vec<&str> = answers.iter().filter(|a| is_2xx(a.1)).map(|a| a.0.as_str()).collect();
        let all = |got: &[Vec<u8>]| keys.iter().all(|k| got.iter().any(|g| g == k.as_bytes()));
        await_arrived(&mut broker, &mut received, "every POST answered 2xx", all).await;
        let positions: Vec<usize> =
            keys.iter().filter_map(|k| received.iter().position(|g| g == k.as_bytes())).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "acknowledged events keep their order");
        let mut statuses: HashMap<u16, usize> = HashMap::new();
        for answer in &answers {
            *statuses.entry(answer.1).or_default() += 1;
        }
        eprintln!(
            "{} {fault}: {} POSTs, answers {statuses:?}, /readyz {readiness:?}, {} acknowledged, all at the broker",
            broker.name(),
            answers.len(),
            keys.len()
        );
        (answers, readiness)
    }
}

/// Reads what arrived at `broker` into `received` until `done` holds for it; panics naming
/// `what` after [`NOTICE`].
async fn await_arrived(
    broker: &mut impl Broker,
    received: &mut Vec<Vec<u8>>,
    what: &str,
    done: impl Fn(&[Vec<u8>]) -> bool,
) {
    let deadline = Instant::now() + NOTICE;
    loop {
        received.extend(broker.arrived().await);
        if done(received) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not at the broker within {NOTICE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The longest a scenario may take, from the proxy's creation to the last check: each wait
/// in it has a bound of its own, and this one ends a test that hangs anyway, so that a
/// hang fails this test rather than the whole run.
const SCENARIO: Duration = Duration::from_secs(300);

/// Runs `scenario`, failing it after [`SCENARIO`].
pub async fn bounded(scenario: impl Future<Output = ()>) {
    tokio::time::timeout(SCENARIO, scenario)
        .await
        .unwrap_or_else(|_| panic!("the scenario did not end within {SCENARIO:?}"));
}

fn is_2xx(status: u16) -> bool {
    (200..300).contains(&status)
}

fn acknowledged(answers: &[Answer]) -> usize {
    answers.iter().filter(|a| is_2xx(a.1)).count()
}

/// Every POST not acknowledged was told so, as an outage answers: 503 (unavailable) or
/// 504 (not confirmed in time).
fn failed_as_an_outage(answers: &[Answer]) {
    for (key, status, took, body) in answers.iter().filter(|a| !is_2xx(a.1)) {
        assert!(*status == 503 || *status == 504, "{key}: {status} after {took:?}: {body}");
    }
}

/// 200 ms more each way: every POST is still acknowledged, only later, and `/readyz`
/// stays 200: the broker is reachable.
pub async fn latency<B: Broker>(broker: B) {
    let run = Run::start(broker).await;
    run.proxy.add_both("latency", json!({ "latency": 200 })).await;
    let answered = run.outage.answers().len();
    run.outage.await_answers("10 POSTs under latency", NOTICE, |a| a.len() >= answered + 10).await;
    run.proxy.remove_both("latency").await;
    let (answers, readiness) = run.finish("latency").await;
    assert_eq!(readiness, [true], "/readyz stayed 200: the broker was reachable all along");
    assert_eq!(acknowledged(&answers), answers.len(), "every POST acknowledged: {answers:?}");
}

/// A bandwidth limit of 32 KB/s each way, with a 64 KiB POST among the small ones: every
/// POST is acknowledged, the large one whole, and `/readyz` stays 200.
pub async fn bandwidth<B: Broker>(broker: B) {
    let mut run = Run::start(broker).await;
    run.proxy.add_both("bandwidth", json!({ "rate": 32 })).await;
    let large = format!("large-{}", "x".repeat(64 * 1024));
    let reply = run.host.post("/ingest", &[("content-type", "text/plain")], large.clone()).await;
    assert_eq!(reply.status, 202, "the large POST is acknowledged under the limit: {}", reply.text());
    let answered = run.outage.answers().len();
    run.outage.await_answers("5 POSTs under the bandwidth limit", NOTICE, |a| a.len() >= answered + 5).await;
    run.proxy.remove_both("bandwidth").await;
    run.await_broker("the large POST, whole", |got| got.iter().any(|g| *g == large.as_bytes())).await;
    let (answers, readiness) = run.finish("bandwidth").await;
    assert_eq!(readiness, [true], "/readyz stayed 200: the broker was reachable all along");
    assert_eq!(acknowledged(&answers), answers.len(), "every POST acknowledged: {answers:?}");
}

/// The connection resets while a publish waits for its acknowledgement: the proxy holds
/// what the broker sends back (a latency toxic of a minute), so that the publish is
/// known to be at the broker with its acknowledgement not yet at the host when the
/// proxy drops every connection (and refuses new ones until it is enabled again).
pub async fn reset<B: Broker>(broker: B) {
    let mut run = Run::start(broker).await;
    run.proxy.add("hold", "latency", "downstream", json!({ "latency": 60_000 })).await;
    // The poster's next publish reaches the broker; its acknowledgement stays in the proxy.
    let before = run.outage.answers();
    let answered: Vec<Vec<u8>> = before.iter().map(|a| a.0.clone().into_bytes()).collect();
    run.await_broker("a publish whose acknowledgement is held", |got| got.iter().any(|g| !answered.contains(g))).await;
    let in_flight = run.received.iter().find(|g| !answered.contains(g)).cloned().expect("found above");
    let in_flight = String::from_utf8(in_flight).expect("a key");
    assert!(
        run.outage.answers().iter().all(|a| a.0 != in_flight),
        "{in_flight} was answered while its acknowledgement was held in the proxy"
    );
    run.proxy.enable(false).await;
    let noticed = run.await_ready(503, "turns 503 once the endpoint lost its connection").await;
    run.proxy.remove("hold").await;
    run.proxy.enable(true).await;
    let answered = run.outage.answers().len();
    let ready = run.await_ready(200, "turns 200 again after the reset, without a restart of the host").await;
    let resumed = run.await_resumed(answered).await;
    let (answers, readiness) = run.finish("reset").await;
    let answer = answers.iter().find(|a| a.0 == in_flight).expect("the POST in flight was answered");
    eprintln!(
        "reset: noticed after {noticed:?}; ready again after {ready:?}, publishing after {resumed:?}; \
         the POST in flight ({in_flight}, at the broker) got {} {}",
        answer.1, answer.3
    );
    assert_eq!(readiness, [true, false, true], "/readyz went 503 during the reset and back");
    failed_as_an_outage(&answers);
}

/// A black hole for [`BLACK_HOLE`]: the proxy accepts bytes both ways and delivers none,
/// on the open connections and on new ones. No POST sent while it lasts is acknowledged,
/// `/readyz` turns 503 once the endpoint's keep-alive notices, and after it the host
/// reconnects by itself.
pub async fn black_hole<B: Broker>(broker: B) {
    let run = Run::start(broker).await;
    let before = run.outage.answers().len();
    // `timeout` 0: the data is dropped and the connection never closed.
    run.proxy.add_both("timeout", json!({ "timeout": 0 })).await;
    let began = Instant::now();
    let noticed = run.await_ready(503, "turns 503 once the endpoint notices the black hole").await;
    tokio::time::sleep_until(began + BLACK_HOLE).await;
    // The POST at `before` may have been under way when the hole opened; every later one
    // was sent into it.
    let during = run.outage.answers();
    run.proxy.remove_both("timeout").await;
    let answered = run.outage.answers().len();
    let ready = run.await_ready(200, "turns 200 again after the black hole, without a restart of the host").await;
    let resumed = run.await_resumed(answered).await;
    let (answers, readiness) = run.finish("black hole").await;
    eprintln!(
        "black hole: noticed after {noticed:?}; after it, ready after {ready:?}, publishing after {resumed:?}; \
         {} POSTs sent into it",
        during.len().saturating_sub(before + 1)
    );
    let into = &during[(before + 1).min(during.len())..];
    assert!(!into.is_empty(), "POSTs were sent into the black hole");
    let acknowledged: Vec<&Answer> = into.iter().filter(|a| is_2xx(a.1)).collect();
    assert!(acknowledged.is_empty(), "acknowledged while no byte reached the broker: {acknowledged:?}");
    assert_eq!(readiness, [true, false, true], "/readyz went 503 during the black hole and back");
    failed_as_an_outage(&answers);
}
