//! The closed-loop load generator: a fixed set of HTTP/1.1 keep-alive
//! connections, each sending its next request only when the previous one has
//! been answered (so the offered load adapts to the server, and the latency
//! histogram is not inflated by a client-side queue).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::template::{Rng, CORE_CONTEXT_LINK};

/// One request to send. `uri` is the path and query string.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub uri: String,
    pub body: Option<Bytes>,
    pub tenant: Option<&'static str>,
}

impl Req {
    pub fn get(uri: String) -> Self {
        Req {
            method: Method::GET,
            uri,
            body: None,
            tenant: None,
        }
    }

    pub fn with_body(method: Method, uri: String, body: Bytes) -> Self {
        Req {
            method,
            uri,
            body: Some(body),
            tenant: None,
        }
    }

    pub fn tenant(mut self, tenant: &'static str) -> Self {
        self.tenant = Some(tenant);
        self
    }
}

/// Makes the next request of a connection, or `None` when the work is done
/// (count-bounded loads such as the batch ingestion).
pub type MakeReq = Arc<dyn Fn(&mut Rng) -> Option<Req> + Send + Sync>;

/// How long and how wide a load runs.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub connections: usize,
    /// Stop sending new requests after this long (`None`: until `MakeReq`
    /// says done). Requests in flight at the deadline are still awaited.
    pub duration: Option<Duration>,
    /// A request unanswered after this long counts as an error.
    pub timeout: Duration,
}

/// What a load produced.
pub struct Outcome {
    /// Latencies of 2xx answers, in microseconds.
    pub latencies: Histogram<u64>,
    pub errors: u64,
    pub elapsed: Duration,
    /// The first failure seen, to tell a broken scenario from a slow one.
    pub first_error: Option<String>,
}

/// The histogram every connection records into: 1 µs to 10 min at 3
/// significant digits (0.1 % resolution, which is far below the noise here).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

/// Runs `make` over `shape.connections` connections to `addr`.
pub async fn drive(addr: SocketAddr, shape: Shape, make: MakeReq) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let deadline = shape.duration.map(|d| start + d);
    let host = HeaderValue::from_str(&addr.to_string())?;
    let mut tasks = Vec::with_capacity(shape.connections);
    for c in 0..shape.connections {
        let make = make.clone();
        let host = host.clone();
        // Distinct seeds per connection and per run, so connections do not
        // walk the same ids in lockstep.
        let seed = (c as u64) << 32 ^ start.elapsed().as_nanos() as u64 ^ (std::process::id() as u64) << 48;
        tasks.push(tokio::spawn(connection(
            addr,
            host,
            shape.timeout,
            deadline,
            make,
            Rng::new(seed),
        )));
    }
    let mut latencies = new_histogram();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let one = task.await.context("a load connection panicked")?;
        latencies.add(&one.latencies).context("merging histograms")?;
        errors += one.errors;
        first_error = first_error.or(one.first_error);
    }
    Ok(Outcome {
        latencies,
        errors,
        elapsed: start.elapsed(),
        first_error,
    })
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    // Small requests must not wait for Nagle's algorithm.
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the peer closes; either way the
        // request loop sees the error, so nothing to report here.
        let _ = connection.await;
    });
    Ok(sender)
}

async fn connection(
    addr: SocketAddr,
    host: HeaderValue,
    timeout: Duration,
    deadline: Option<Instant>,
    make: MakeReq,
    mut rng: Rng,
) -> Outcome {
    let mut out = Outcome {
        latencies: new_histogram(),
        errors: 0,
        elapsed: Duration::ZERO,
        first_error: None,
    };
    let fail = |out: &mut Outcome, message: String| {
        out.errors += 1;
        out.first_error.get_or_insert(message);
    };
    let mut sender: Option<Sender> = None;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let Some(req) = make(&mut rng) else { break };
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(addr).await {
                Ok(s) => sender = Some(s),
                Err(error) => {
                    fail(&mut out, format!("connect: {error}"));
                    // Bounded: the deadline or the work list still ends the loop.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let request = match build(&host, req) {
            Ok(r) => r,
            Err(error) => {
                fail(&mut out, format!("bad request: {error}"));
                continue;
            }
        };
        let started = Instant::now();
        let answer = tokio::time::timeout(timeout, async {
            s.ready().await?;
            let response = s.send_request(request).await?;
            let status = response.status();
            // Read the whole body: a response is only done when it is received.
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        })
        .await;
        let took = started.elapsed();
        match answer {
            Ok(Ok((status, _))) if status.is_success() => {
                out.latencies.saturating_record(took.as_micros().max(1) as u64);
            }
            Ok(Ok((status, body))) => {
                let excerpt: String = String::from_utf8_lossy(&body).chars().take(300).collect();
                fail(&mut out, format!("HTTP {status}: {excerpt}"));
            }
            Ok(Err(error)) => {
                fail(&mut out, format!("transport: {error}"));
                sender = None;
            }
            Err(_) => {
                fail(&mut out, format!("no answer within {timeout:?}"));
                // The connection still has the old request in flight.
                sender = None;
            }
        }
    }
    out
}

fn build(host: &HeaderValue, req: Req) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    let mut builder = Request::builder()
        .method(req.method)
        .uri(req.uri)
        .header(HOST, host.clone())
        .header(ACCEPT, "application/json")
        .header("link", CORE_CONTEXT_LINK);
    if let Some(tenant) = req.tenant {
        builder = builder.header("ngsild-tenant", tenant);
    }
    if req.body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    builder.body(Full::new(req.body.unwrap_or_default()))
}

/// One request on a fresh connection, outside any measurement: set-up,
/// sanity checks, and the payload the ceiling endpoint mirrors.
pub async fn once(addr: SocketAddr, req: Req) -> anyhow::Result<(hyper::StatusCode, hyper::HeaderMap, Bytes)> {
    let mut sender = connect(addr).await?;
    let request = build(&HeaderValue::from_str(&addr.to_string())?, req)?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    Ok((parts.status, parts.headers, body.collect().await?.to_bytes()))
}

/// The figures of one measured load.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Answered 2xx plus errors.
    pub requests: u64,
    /// 2xx answers per second of wall time.
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

pub fn summarise(latencies: &Histogram<u64>, errors: u64, elapsed: Duration) -> Summary {
    let ok = latencies.len();
    let secs = elapsed.as_secs_f64();
    let ms = |q: f64| {
        if ok == 0 {
            f64::NAN
        } else {
            latencies.value_at_quantile(q) as f64 / 1000.0
        }
    };
    Summary {
        requests: ok + errors,
        per_sec: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        errors,
    }
}

impl Outcome {
    pub fn summary(&self) -> Summary {
        summarise(&self.latencies, self.errors, self.elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = new_histogram();
        // 1 ms .. 100 ms, one sample each.
        for ms in 1..=100u64 {
            h.record(ms * 1000).unwrap();
        }
        let s = summarise(&h, 5, Duration::from_secs(2));
        assert_eq!(s.requests, 105);
        assert_eq!(s.errors, 5);
        assert!((s.per_sec - 50.0).abs() < 1e-9);
        // 3 significant digits: within 0.1 % of the exact value.
        assert!((s.p50_ms - 50.0).abs() <= 0.05, "{}", s.p50_ms);
        assert!((s.p95_ms - 95.0).abs() <= 0.1, "{}", s.p95_ms);
        assert!((s.p99_ms - 99.0).abs() <= 0.1, "{}", s.p99_ms);
    }

    #[test]
    fn empty_load_has_no_percentiles() {
        let s = summarise(&new_histogram(), 3, Duration::from_secs(1));
        assert_eq!(s.requests, 3);
        assert_eq!(s.per_sec, 0.0);
        assert!(s.p50_ms.is_nan());
    }
}
