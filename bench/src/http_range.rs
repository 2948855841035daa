//! `http-range`: ranged GETs over a hot set against any S3-style HTTP endpoint (the cache
//! node, nginx, the origin), over plain HTTP/1.1 keep-alive connections, anonymous.
//!
//! Which range request `i` reads is a pure function of `(seed, i)`, so two servers measured
//! with the same arguments get the same keys and ranges in the same order. Every response is
//! checked: status 206, `Content-Range`, length and every byte against [`crate::content`]. A
//! failed check is counted and fails the run; wrong bytes served fast are not a result.
//!
//! Closed loop by default: `--concurrency` connections, each sending its next request as
//! soon as the previous answer is checked. With `--rate R`, request `i` is due at
//! `start + i / R` (an open-loop schedule served by at most `--concurrency` requests in
//! flight) and its latency counts from when it was due, not when it was sent, so a stalled
//! server cannot hide its queue (coordinated omission). Requests are released on time to
//! within microseconds (see [`pace_until`]).
//!
//! Output: one JSON line on stdout ([`RunReport`]); diagnostics go to stderr.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONTENT_RANGE, HOST, RANGE};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::content;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// Uniformly random object and start offset (a multiple of `--align`).
    Random,
    /// Every object front to back in `--read-size` pieces, once (for warming a cache).
    Sweep,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    target: String,
    /// Bucket holding the objects written by `gen-objects`.
    #[arg(long, default_value = "bench")]
    bucket: String,
    /// Number of objects in the hot set (`obj-00000` …).
    #[arg(long)]
    objects: u64,
    /// Size of each object in bytes (as given to `gen-objects`).
    #[arg(long)]
    object_size: u64,
    /// Content seed (as given to `gen-objects`); also seeds the choice of ranges.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Bytes per range request.
    #[arg(long)]
    read_size: u64,
    /// Range starts are multiples of this (1: any byte offset).
    #[arg(long, default_value_t = 1)]
    align: u64,
    #[arg(long, value_enum, default_value_t = Pattern::Random)]
    pattern: Pattern,
    /// Connections, each with at most one request in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Stop issuing requests after this many seconds.
    #[arg(long)]
    seconds: f64,
    /// Stop issuing requests after this many (a sweep stops after one pass anyway).
    #[arg(long)]
    max_requests: Option<u64>,
    /// Offered load in requests per second (fixed schedule); closed loop when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// A request taking longer than this counts as a timeout error.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Free-form name of the server under test, copied into the report.
    #[arg(long)]
    label: Option<String>,
    /// Free-form phase name (warm, pair, latency …), copied into the report.
    #[arg(long)]
    phase: Option<String>,
    /// Round number within the phase, copied into the report (pairs are matched on it).
    #[arg(long)]
    round: Option<u32>,
    /// Process ids of the server under test; their CPU time over the run is reported.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Process ids of backends behind the server under test (e.g. the cache nodes behind a
    /// proxy); their CPU time is reported apart, as `node_cpu`.
    #[arg(long)]
    node_pid: Vec<u32>,
}

/// What one run measured: one JSON line on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub label: Option<String>,
    pub phase: Option<String>,
    pub round: Option<u32>,
    pub target: String,
    pub pattern: String,
    pub read_size: u64,
    pub align: u64,
    pub objects: u64,
    pub object_size: u64,
    pub seed: u64,
    pub concurrency: usize,
    pub seconds: f64,
    /// Requests per second offered with `--rate`; `None` for a closed loop.
    pub offered_rate: Option<f64>,
    /// Requests sent (successful or not).
    pub requests: u64,
    pub ok: u64,
    pub errors: ErrorCounts,
    pub elapsed_s: f64,
    /// Successful requests per second.
    pub req_per_s: f64,
    /// Checked payload MiB per second.
    pub mib_per_s: f64,
    /// Latency of successful requests: from when each was due (`--rate`) or sent.
    pub latency_us: Percentiles,
    /// From sending the request to having checked the last byte.
    pub service_us: Percentiles,
    /// TCP connections opened (one per worker, plus reconnects).
    pub connects: u64,
    /// CPU seconds used by this process per second of the run (1.0 = one core busy).
    pub client_cpu: Option<f64>,
    /// CPU seconds used by `--server-pid` processes per second of the run.
    pub server_cpu: Option<f64>,
    /// CPU seconds used by `--node-pid` processes per second of the run (absent without
    /// `--node-pid`, and in reports written before the option existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cpu: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Status other than 206.
    pub status: u64,
    /// Wrong `Content-Range`, length or bytes.
    pub content: u64,
    /// Connect, send or receive failures.
    pub transport: u64,
    /// No complete answer within `--timeout-ms`.
    pub timeout: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.status + self.content + self.transport + self.timeout
    }

    fn add(&mut self, other: &ErrorCounts) {
        self.status += other.status;
        self.content += other.content;
        self.transport += other.transport;
        self.timeout += other.timeout;
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    fn from_nanos(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            p50: us(hist.value_at_quantile(0.50)),
            p90: us(hist.value_at_quantile(0.90)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
            mean: hist.mean() / 1000.0,
        }
    }
}

/// Which bytes request `i` reads: a pure function of the arguments and `i`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    pattern: Pattern,
    seed: u64,
    objects: u64,
    object_size: u64,
    read_size: u64,
    align: u64,
}

/// One range request: `len` bytes of `object` from byte `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RangeRead {
    object: u64,
    start: u64,
    len: u64,
}

impl Plan {
    /// Number of requests the pattern has, if it is finite.
    fn len(&self) -> Option<u64> {
        match self.pattern {
            Pattern::Random => None,
            Pattern::Sweep => Some(self.objects * self.object_size.div_ceil(self.read_size)),
        }
    }

    fn request(&self, i: u64) -> RangeRead {
        match self.pattern {
            Pattern::Random => {
                let h1 =
                    content::mix64(self.seed ^ 0x0000_5EED_0F2A_9E00 ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let h2 = content::mix64(h1);
                let slots = (self.object_size - self.read_size) / self.align + 1;
                RangeRead { object: h1 % self.objects, start: (h2 % slots) * self.align, len: self.read_size }
            }
            Pattern::Sweep => {
                let per_object = self.object_size.div_ceil(self.read_size);
                let start = (i % per_object) * self.read_size;
                RangeRead { object: i / per_object, start, len: self.read_size.min(self.object_size - start) }
            }
        }
    }
}

/// What every worker shares; read-only apart from the counters.
struct Shared {
    plan: Plan,
    addr: SocketAddr,
    host: HeaderValue,
    /// Request target (`/bucket/key`) of each object.
    paths: Vec<Uri>,
    next_request: AtomicU64,
    request_limit: u64,
    start: Instant,
    deadline: Instant,
    rate: Option<f64>,
    timeout: Duration,
    /// Failures already logged; only the first few are.
    logged_failures: AtomicU32,
}

const LOGGED_FAILURES_MAX: u32 = 5;
/// Pause after a failed connect, so a dead server does not turn the run into a busy loop.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(10);
/// Resolution of tokio's timer wheel.
const TIMER_GRANULARITY: Duration = Duration::from_millis(1);
/// Highest latency the histograms track; larger values are clamped (the timeout is lower).
const HISTOGRAM_MAX_NS: u64 = 3_600_000_000_000;

impl Shared {
    fn log_failure(&self, read: RangeRead, what: &str) {
        if self.logged_failures.fetch_add(1, Ordering::Relaxed) < LOGGED_FAILURES_MAX {
            tracing::warn!(
                object = read.object,
                start = read.start,
                len = read.len,
                "request failed: {what}"
            );
        }
    }
}

struct WorkerStats {
    latency_ns: Histogram<u64>,
    service_ns: Histogram<u64>,
    requests: u64,
    ok: u64,
    bytes: u64,
    errors: ErrorCounts,
    connects: u64,
}

impl WorkerStats {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency_ns: Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3)?,
            service_ns: Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3)?,
            requests: 0,
            ok: 0,
            bytes: 0,
            errors: ErrorCounts::default(),
            connects: 0,
        })
    }

    fn merge(&mut self, other: &WorkerStats) -> anyhow::Result<()> {
        self.latency_ns.add(&other.latency_ns)?;
        self.service_ns.add(&other.service_ns)?;
        self.requests += other.requests;
        self.ok += other.ok;
        self.bytes += other.bytes;
        self.errors.add(&other.errors);
        self.connects += other.connects;
        Ok(())
    }
}

/// Why one request failed.
enum Failure {
    Transport(String),
    Status(StatusCode),
    Content(String),
}

/// Runs the load, prints the report as one JSON line and fails if any request failed.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let report = measure(args).await?;
    println!("{}", serde_json::to_string(&report)?);
    let failed = report.errors.total();
    if failed > 0 {
        bail!("{failed} of {} requests failed ({:?})", report.requests, report.errors);
    }
    if report.ok == 0 {
        bail!("no request completed");
    }
    Ok(())
}

/// Runs the load and returns what it measured, failed requests included.
pub async fn measure(args: Args) -> anyhow::Result<RunReport> {
    ensure!(args.objects > 0, "--objects must be positive");
    ensure!(
        args.read_size > 0 && args.read_size <= args.object_size,
        "--read-size must be in 1..=--object-size"
    );
    ensure!(args.align > 0, "--align must be positive");
    ensure!(args.concurrency > 0, "--concurrency must be positive");
    ensure!(args.seconds.is_finite() && args.seconds > 0.0, "--seconds must be positive");
    if let Some(rate) = args.rate {
        ensure!(rate.is_finite() && rate > 0.0, "--rate must be positive");
    }

    let target: Uri = args.target.parse().with_context(|| format!("parsing --target {}", args.target))?;
    ensure!(target.scheme_str() == Some("http"), "--target must be an http:// URL");
    let authority = target.authority().context("--target has no host")?.clone();
    let addr = tokio::net::lookup_host(authority.as_str())
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let prefix = target.path().trim_end_matches('/');
    let paths = (0..args.objects)
        .map(|i| {
            let path = format!("{prefix}/{}/{}", args.bucket, content::object_key(i));
            path.parse::<Uri>().with_context(|| format!("bad request path {path}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let plan = Plan {
        pattern: args.pattern,
        seed: args.seed,
        objects: args.objects,
        object_size: args.object_size,
        read_size: args.read_size,
        align: args.align,
    };
    let request_limit = match (plan.len(), args.max_requests) {
        (Some(a), Some(b)) => a.min(b),
        (Some(n), None) | (None, Some(n)) => n,
        (None, None) => u64::MAX,
    };

    let cpu_before = CpuSample::take(&args.server_pid);
    let node_cpu_before = (!args.node_pid.is_empty()).then(|| CpuSample::take(&args.node_pid)).flatten();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        plan,
        addr,
        host: HeaderValue::from_str(authority.as_str())?,
        paths,
        next_request: AtomicU64::new(0),
        request_limit,
        start,
        deadline: start + Duration::from_secs_f64(args.seconds),
        rate: args.rate,
        timeout: Duration::from_millis(args.timeout_ms),
        logged_failures: AtomicU32::new(0),
    });
    let workers: Vec<_> = (0..args.concurrency).map(|_| tokio::spawn(worker(Arc::clone(&shared)))).collect();
    let mut total = WorkerStats::new()?;
    for handle in workers {
        total.merge(&handle.await.context("load worker panicked")??)?;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let cpu_after = CpuSample::take(&args.server_pid);
    let node_cpu_after = (!args.node_pid.is_empty()).then(|| CpuSample::take(&args.node_pid)).flatten();

    Ok(RunReport {
        label: args.label,
        phase: args.phase,
        round: args.round,
        target: args.target,
        pattern: format!("{:?}", args.pattern).to_lowercase(),
        read_size: args.read_size,
        align: args.align,
        objects: args.objects,
        object_size: args.object_size,
        seed: args.seed,
        concurrency: args.concurrency,
        seconds: args.seconds,
        offered_rate: args.rate,
        requests: total.requests,
        ok: total.ok,
        errors: total.errors,
        elapsed_s,
        req_per_s: total.ok as f64 / elapsed_s,
        mib_per_s: total.bytes as f64 / elapsed_s / (1024.0 * 1024.0),
        latency_us: Percentiles::from_nanos(&total.latency_ns),
        service_us: Percentiles::from_nanos(&total.service_ns),
        connects: total.connects,
        client_cpu: cpu_before.as_ref().zip(cpu_after.as_ref()).map(|(a, b)| (b.own_s - a.own_s) / elapsed_s),
        server_cpu: cpu_before
            .as_ref()
            .zip(cpu_after.as_ref())
            .and_then(|(a, b)| a.servers_delta(b))
            .map(|s| s / elapsed_s),
        node_cpu: node_cpu_before
            .as_ref()
            .zip(node_cpu_after.as_ref())
            .and_then(|(a, b)| a.servers_delta(b))
            .map(|s| s / elapsed_s),
    })
}

async fn worker(shared: Arc<Shared>) -> anyhow::Result<WorkerStats> {
    let mut stats = WorkerStats::new()?;
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    loop {
        let i = shared.next_request.fetch_add(1, Ordering::Relaxed);
        if i >= shared.request_limit {
            break;
        }
        let due = match shared.rate {
            Some(rate) => shared.start + Duration::from_secs_f64(i as f64 / rate),
            None => Instant::now(),
        };
        if due >= shared.deadline {
            break;
        }
        if shared.rate.is_some() {
            pace_until(due).await;
        }
        let read = shared.plan.request(i);
        stats.requests += 1;

        if let Err(err) = ready_connection(&mut sender, &shared, &mut stats).await {
            stats.errors.transport += 1;
            shared.log_failure(read, &format!("connect: {err:#}"));
            tokio::time::sleep(RECONNECT_BACKOFF).await;
            continue;
        }
        let Some(conn) = sender.as_mut() else { continue };
        let sent = Instant::now();
        let outcome = tokio::time::timeout(shared.timeout, exchange(conn, &shared, read)).await;
        let done = Instant::now();
        match outcome {
            Ok(Ok(())) => {
                stats.ok += 1;
                stats.bytes += read.len;
                stats.latency_ns.saturating_record(nanos(done - due));
                stats.service_ns.saturating_record(nanos(done - sent));
            }
            Ok(Err(Failure::Status(status))) => {
                stats.errors.status += 1;
                shared.log_failure(read, &format!("status {status}"));
            }
            Ok(Err(Failure::Content(what))) => {
                stats.errors.content += 1;
                shared.log_failure(read, &what);
            }
            Ok(Err(Failure::Transport(what))) => {
                stats.errors.transport += 1;
                shared.log_failure(read, &what);
                sender = None;
            }
            Err(_) => {
                stats.errors.timeout += 1;
                shared.log_failure(read, "timed out");
                // The answer may still arrive on this connection; never read it as the next one.
                sender = None;
            }
        }
        if Instant::now() >= shared.deadline {
            break;
        }
    }
    Ok(stats)
}

/// Waits until `due` to within microseconds: tokio's timer rounds up to whole
/// milliseconds, which would add up to 1 ms to every latency of a paced run, so the last
/// stretch yields in a loop instead (the client core is the load generator's alone).
async fn pace_until(due: Instant) {
    if let Some(coarse) = due.checked_sub(TIMER_GRANULARITY)
        && coarse > Instant::now()
    {
        tokio::time::sleep_until(coarse.into()).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Makes `slot` hold a connection ready for a request, reconnecting if the server closed
/// the previous one (e.g. at its keep-alive request limit, which is not an error).
async fn ready_connection(
    slot: &mut Option<SendRequest<Empty<Bytes>>>,
    shared: &Shared,
    stats: &mut WorkerStats,
) -> anyhow::Result<()> {
    if let Some(conn) = slot.as_mut()
        && conn.ready().await.is_ok()
    {
        return Ok(());
    }
    *slot = None;
    let stream = tokio::time::timeout(shared.timeout, TcpStream::connect(shared.addr))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connecting to {}", shared.addr))?;
    stream.set_nodelay(true)?;
    let (mut conn, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(err) = driver.await {
            tracing::debug!(%err, "connection ended with an error");
        }
    });
    stats.connects += 1;
    conn.ready().await?;
    *slot = Some(conn);
    Ok(())
}

/// Sends one range request and checks the whole answer.
async fn exchange(
    conn: &mut SendRequest<Empty<Bytes>>,
    shared: &Shared,
    read: RangeRead,
) -> Result<(), Failure> {
    let path = usize::try_from(read.object)
        .ok()
        .and_then(|i| shared.paths.get(i))
        .ok_or_else(|| Failure::Content(format!("object {} out of range", read.object)))?;
    let last = read.start + read.len - 1;
    let request = Request::get(path.clone())
        .header(HOST, shared.host.clone())
        .header(RANGE, format!("bytes={}-{last}", read.start))
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Transport(format!("building request: {e}")))?;
    let response = conn.send_request(request).await.map_err(|e| Failure::Transport(format!("send: {e}")))?;
    let status = response.status();
    let expected_range = format!("bytes {}-{last}/{}", read.start, shared.plan.object_size);
    let range_ok =
        response.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()) == Some(&expected_range);
    let range_error = (!range_ok).then(|| {
        let got = response.headers().get(CONTENT_RANGE);
        Failure::Content(format!("Content-Range {got:?}, expected {expected_range}"))
    });
    let check = status == StatusCode::PARTIAL_CONTENT && range_ok;

    // Check each frame where it lands instead of collecting the body first: one copy of
    // every byte fewer on the load generator's core. The body is read to its end even
    // after a failure so the connection stays usable.
    let mut body = response.into_body();
    let mut received = 0u64;
    let mut first_wrong: Option<u64> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::Transport(format!("receive: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if check && first_wrong.is_none() {
            let fits =
                usize::try_from(read.len.saturating_sub(received)).map_or(true, |room| data.len() <= room);
            if fits {
                first_wrong =
                    content::first_mismatch(shared.plan.seed, read.object, read.start + received, &data)
                        .map(|at| received + at as u64);
            }
        }
        received += data.len() as u64;
    }

    if status != StatusCode::PARTIAL_CONTENT {
        return Err(Failure::Status(status));
    }
    if let Some(failure) = range_error {
        return Err(failure);
    }
    if received != read.len {
        return Err(Failure::Content(format!("{received} bytes, expected {}", read.len)));
    }
    if let Some(at) = first_wrong {
        return Err(Failure::Content(format!("wrong byte at offset {}", read.start + at)));
    }
    Ok(())
}

/// CPU time used so far by this process and by each server process, in seconds.
struct CpuSample {
    own_s: f64,
    /// One entry per `--server-pid`; `None` where the process could not be read (gone).
    servers_s: Vec<Option<f64>>,
}

impl CpuSample {
    fn take(server_pids: &[u32]) -> Option<Self> {
        Some(Self {
            own_s: proc_cpu_seconds("self")?,
            servers_s: server_pids.iter().map(|pid| proc_cpu_seconds(&pid.to_string())).collect(),
        })
    }

    /// CPU seconds the server processes used between `self` and `later`, counting only
    /// processes seen both times (nginx's cache loader, for one, exits on its own).
    fn servers_delta(&self, later: &CpuSample) -> Option<f64> {
        let deltas: Vec<f64> = self
            .servers_s
            .iter()
            .zip(&later.servers_s)
            .filter_map(|(a, b)| Some(b.as_ref()? - a.as_ref()?))
            .collect();
        (!deltas.is_empty()).then(|| deltas.iter().sum())
    }
}

/// User plus system CPU seconds of `/proc/<pid>`, or `None` off Linux or if it is gone.
fn proc_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields after it do not.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // Fields 14 and 15 of the file are utime and stime; `after_comm` starts at field 3.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value; it has no memory-safety preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks_per_s > 0).then(|| (utime + stime) as f64 / ticks_per_s as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(pattern: Pattern, align: u64) -> Plan {
        Plan { pattern, seed: 9, objects: 3, object_size: 10_000, read_size: 4096, align }
    }

    #[test]
    fn random_reads_stay_inside_objects_and_respect_alignment() {
        for align in [1, 512, 4096] {
            let p = plan(Pattern::Random, align);
            for i in 0..10_000 {
                let r = p.request(i);
                assert!(r.object < 3);
                assert_eq!(r.len, 4096);
                assert!(r.start + r.len <= 10_000, "{r:?}");
                assert_eq!(r.start % align, 0);
            }
        }
    }

    #[test]
    fn random_reads_are_a_function_of_seed_and_index() {
        let p = plan(Pattern::Random, 1);
        assert_eq!(p.request(17), p.request(17));
        let other = Plan { seed: 10, ..p };
        assert!((0..100).any(|i| p.request(i) != other.request(i)));
        // Unaligned starts do occur.
        assert!((0..100).any(|i| !p.request(i).start.is_multiple_of(8)));
    }

    #[test]
    fn a_sweep_covers_every_byte_once() {
        let p = plan(Pattern::Sweep, 1);
        assert_eq!(p.len(), Some(9));
        let reads: Vec<_> = (0..9).map(|i| p.request(i)).collect();
        for object in 0..3 {
            let mut next = 0;
            for r in reads.iter().filter(|r| r.object == object) {
                assert_eq!(r.start, next);
                next += r.len;
            }
            assert_eq!(next, 10_000);
        }
    }

    /// A scratch folder removed on drop (the bench has no tempfile dependency).
    struct ScratchDir(std::path::PathBuf);

    impl ScratchDir {
        fn new(name: &str) -> std::io::Result<Self> {
            let path = std::env::temp_dir().join(format!("lakecache-bench-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn parse<A: clap::Args>(args: &[&str]) -> anyhow::Result<A> {
        #[derive(clap::Parser)]
        struct Cli<A: clap::Args> {
            #[command(flatten)]
            args: A,
        }
        let argv = std::iter::once("test").chain(args.iter().copied());
        Ok(<Cli<A> as clap::Parser>::try_parse_from(argv)?.args)
    }

    /// The real thing on loopback: objects from `gen-objects`, the s3s-fs origin, the load
    /// generator; right bytes pass, a wrong seed (wrong bytes) is caught on every request.
    #[tokio::test]
    async fn checks_every_byte_from_a_real_s3_server() -> anyhow::Result<()> {
        let dir = ScratchDir::new("http-range")?;
        let root = dir.0.to_string_lossy().into_owned();
        crate::gen_objects::run(parse(&[
            "--root", &root, "--count", "3", "--size", "300000", "--seed", "7",
        ])?)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let target = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::origin::serve(
            listener,
            crate::origin::service(&dir.0, None)?,
            Duration::ZERO,
            async {
                let _ = stopped.await;
            },
        ));

        let common = ["--target", &target, "--objects", "3", "--object-size", "300000", "--seconds", "20"];
        let run = |extra: &[&str]| -> anyhow::Result<Args> { parse(&[&common[..], extra].concat()) };

        let random = measure(run(&["--seed", "7", "--read-size", "65536", "--max-requests", "300"])?).await?;
        assert_eq!((random.ok, random.errors.total()), (300, 0), "{random:?}");

        let sweep = measure(run(&["--seed", "7", "--read-size", "65536", "--pattern", "sweep"])?).await?;
        // 300000 bytes in 64 KiB pieces: 5 per object, the last one short.
        assert_eq!((sweep.ok, sweep.errors.total()), (15, 0), "{sweep:?}");

        let paced =
            measure(run(&["--seed", "7", "--read-size", "4096", "--rate", "2000", "--max-requests", "100"])?)
                .await?;
        assert_eq!((paced.ok, paced.errors.total()), (100, 0), "{paced:?}");
        assert!(paced.elapsed_s >= 0.045, "100 requests at 2000/s take about 50 ms: {paced:?}");

        let wrong = measure(run(&["--seed", "8", "--read-size", "4096", "--max-requests", "50"])?).await?;
        assert_eq!((wrong.ok, wrong.errors.content), (0, 50), "{wrong:?}");

        let missing = measure(parse(&[
            "--target",
            &target,
            "--objects",
            "4",
            "--object-size",
            "300000",
            "--seconds",
            "20",
            "--seed",
            "7",
            "--read-size",
            "4096",
            "--max-requests",
            "200",
        ])?)
        .await?;
        assert!(missing.errors.status > 0 && missing.ok > 0, "obj-00003 does not exist: {missing:?}");

        let _ = stop.send(());
        server.await?;
        Ok(())
    }

    #[test]
    fn own_cpu_time_is_readable() {
        if cfg!(target_os = "linux") {
            assert!(proc_cpu_seconds("self").is_some());
        }
    }
}
