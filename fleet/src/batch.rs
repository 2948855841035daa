//! Batching of small page reads to one node (`wire::batch`): what turns many concurrent
//! reads into few exchanges, so the node and this member pay one request's system calls,
//! wake-ups and signature for a whole batch instead of one per read.
//!
//! Per node, at most `batch_in_flight` exchanges run at once. A read (of a known version,
//! at most `MAX_ITEM_BYTES`) that finds a free place goes alone as a single read — at low
//! load nothing waits and nothing changes. One that finds every place taken joins the
//! node's queue; when an exchange ends, whatever has queued leaves as one batch, in a task
//! that keeps sending batches while reads keep queuing and then ends. So batches form
//! exactly when the node is busy, and their size follows the load.
//!
//! A queued read gets its bytes, its own error, or — where the node deferred it (a page not
//! in its memory), the node has no batch endpoint, or the batch could not be sent — word
//! to read alone. A batch that fails as a whole (no answer, a node's 5xx) fails each of its
//! reads with that error, as the same reads sent singly would have failed: failover,
//! ejection and the retry budget see the same as without batching. A task that ends
//! without finishing (its runtime shut down) sends every read it held or that waits on it
//! off to read alone: nothing waits forever.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lakecache_common::page::ByteRange;
use lakecache_common::wire::{self, batch};
use tokio::sync::oneshot;

use crate::conn;
use crate::upstream::UpstreamError;

/// How long a node that answered it has no batch endpoint is read singly before trying again.
const OFF_FOR: Duration = Duration::from_secs(60);

/// What a queued read gets.
pub(crate) enum Outcome {
    Data(Bytes),
    /// Read it alone (single read).
    Alone,
    Failed(UpstreamError),
}

/// Where a read goes.
pub(crate) enum Admission {
    /// A free place: send the read singly while holding it.
    Alone(Slot),
    /// Queued: the outcome comes on this channel (a closed channel means: read alone).
    Queued(oneshot::Receiver<Outcome>),
    /// Batching is off for this node now: read singly.
    Off,
}

/// One node's batching state.
pub(crate) struct Batcher {
    node: String,
    pool: Arc<conn::Pool>,
    key: wire::FleetKey,
    max_in_flight: usize,
    state: parking_lot::Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Waiting>,
    in_flight: usize,
    off_until: Option<Instant>,
}

struct Waiting {
    text: String,
    len: u64,
    tx: oneshot::Sender<Outcome>,
}

/// A place among the node's exchanges, held by a single read; given back on drop, which
/// sends what queued meanwhile.
pub(crate) struct Slot(Arc<Batcher>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.place_freed();
    }
}

impl Batcher {
    pub(crate) fn new(node: &str, pool: Arc<conn::Pool>, key: wire::FleetKey, max_in_flight: usize) -> Self {
        Self { node: node.to_string(), pool, key, max_in_flight, state: Default::default() }
    }

    /// Where a read of `range` of `bucket/key` at `version` goes.
    pub(crate) fn admit(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        version: &str,
        range: ByteRange,
    ) -> Admission {
        let mut st = self.state.lock();
        if let Some(until) = st.off_until {
            if Instant::now() < until {
                return Admission::Off;
            }
            st.off_until = None;
        }
        if st.in_flight < self.max_in_flight {
            st.in_flight += 1;
            return Admission::Alone(Slot(self.clone()));
        }
        drop(st);
        let mut text = String::with_capacity(bucket.len() + key.len() + version.len() + 32);
        batch::push_item(&mut text, bucket, key, version, range.start, range.end);
        if text.len() > batch::MAX_TEXT {
            return Admission::Off;
        }
        let (tx, rx) = oneshot::channel();
        let mut st = self.state.lock();
        if st.in_flight < self.max_in_flight {
            // A place came free meanwhile.
            st.in_flight += 1;
            return Admission::Alone(Slot(self.clone()));
        }
        st.queue.push_back(Waiting { text, len: range.len(), tx });
        Admission::Queued(rx)
    }

    /// An exchange ended: what queued leaves as a batch, or the place is free.
    fn place_freed(self: &Arc<Self>) {
        let mut st = self.state.lock();
        let Some(next) = take_batch(&mut st) else {
            st.in_flight -= 1;
            return;
        };
        drop(st);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(self.clone().run(next));
        } else {
            // No runtime to send it from: those reads go alone.
            drop(next);
            let mut st = self.state.lock();
            st.in_flight -= 1;
            st.queue.clear();
        }
    }

    /// Sends `batch`, then whatever queued meanwhile, until the queue is empty.
    async fn run(self: Arc<Self>, mut batch: Vec<Waiting>) {
        let mut guard = RunGuard { batcher: Some(self.clone()) };
        loop {
            self.exchange(std::mem::take(&mut batch)).await;
            let mut st = self.state.lock();
            match take_batch(&mut st) {
                Some(b) => batch = b,
                None => {
                    st.in_flight -= 1;
                    guard.batcher = None;
                    return;
                }
            }
        }
    }

    /// One batch: sent, answered, every read told its outcome.
    async fn exchange(&self, batch: Vec<Waiting>) {
        let mut text = String::with_capacity(batch.iter().map(|w| w.text.len() + 1).sum());
        for w in &batch {
            if !text.is_empty() {
                text.push(';');
            }
            text.push_str(&w.text);
        }
        let outcomes = self.outcomes(&text, &batch).await;
        for (w, o) in batch.into_iter().zip(outcomes) {
            let _ = w.tx.send(o);
        }
    }

    async fn outcomes(&self, text: &str, batch: &[Waiting]) -> Vec<Outcome> {
        let all = |f: &dyn Fn() -> Outcome| batch.iter().map(|_| f()).collect::<Vec<_>>();
        let auth = self.key.auth_value("GET", batch::BATCH_PATH, text, "");
        let headers = [(wire::FLEET_AUTH, auth.as_str()), (batch::BATCH, text)];
        // The most the answer may hold: every item served, each with its part line.
        let max = batch.iter().map(|w| w.len + batch::PART_OVERHEAD).sum::<u64>();
        let expect = usize::try_from(max).unwrap_or(usize::MAX);
        let answer = match crate::upstream::exchange(
            &self.pool,
            &self.node,
            "GET",
            batch::BATCH_PATH,
            &headers,
            expect,
            None,
        )
        .await
        {
            Ok(a) => a,
            Err(UpstreamError::Answer { status, .. }) if matches!(status.as_u16(), 404 | 405 | 501) => {
                tracing::info!(node = %self.node, %status, "cache node has no batch endpoint; reading singly for a while");
                self.state.lock().off_until = Some(Instant::now() + OFF_FOR);
                return all(&|| Outcome::Alone);
            }
            Err(e) => return all(&|| Outcome::Failed(e.clone())),
        };
        let broken = |reason: String| UpstreamError::NoAnswer { node: self.node.clone(), reason };
        if answer.body.remaining() > max {
            let e = broken(format!("a batch answer of {} bytes, more than {max}", answer.body.remaining()));
            return all(&|| Outcome::Failed(e.clone()));
        }
        let body = match answer.body.read_all().await {
            Ok(b) => b,
            Err(e) => {
                let e = broken(format!("batch answer broke off: {}", e.0));
                return all(&|| Outcome::Failed(e.clone()));
            }
        };
        match batch::parse_parts(&body, batch.len()) {
            Ok(parts) => parts
                .into_iter()
                .map(|p| match p {
                    batch::Part::Data(b) => Outcome::Data(b),
                    batch::Part::Defer => Outcome::Alone,
                    batch::Part::Error { status, code, origin, message } => {
                        Outcome::Failed(UpstreamError::Answer {
                            node: self.node.clone(),
                            status: http::StatusCode::from_u16(status)
                                .unwrap_or(http::StatusCode::BAD_GATEWAY),
                            code,
                            message: Some(message).filter(|m| !m.is_empty()),
                            origin,
                        })
                    }
                })
                .collect(),
            Err(why) => {
                let e = broken(format!("an unreadable batch answer: {why}"));
                all(&|| Outcome::Failed(e.clone()))
            }
        }
    }
}

/// The next batch from the queue: reads whose reader is still there, in order, within the
/// protocol's bounds. `None`: nothing queued.
fn take_batch(st: &mut State) -> Option<Vec<Waiting>> {
    let mut out = Vec::new();
    let (mut text, mut bytes) = (0usize, 0u64);
    while let Some(w) = st.queue.front() {
        if w.tx.is_closed() {
            st.queue.pop_front();
            continue;
        }
        if out.len() == batch::MAX_ITEMS
            || text + w.text.len() + 1 > batch::MAX_TEXT
            || bytes + w.len > batch::MAX_BATCH_BYTES
        {
            break;
        }
        text += w.text.len() + 1;
        bytes += w.len;
        out.extend(st.queue.pop_front());
    }
    (!out.is_empty()).then_some(out)
}

/// Ends a batch task that did not finish (dropped with its runtime, or a panic): its place is
/// given back and every queued read goes alone, so none waits for a task that is gone.
struct RunGuard {
    batcher: Option<Arc<Batcher>>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(b) = self.batcher.take() {
            let mut st = b.state.lock();
            st.in_flight -= 1;
            st.queue.clear();
        }
    }
}
