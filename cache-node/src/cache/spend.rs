//! What one read costs at the origin, and the most it may cost (`wire::ORIGIN_BUDGET`).
//!
//! A read runs inside [`scope`] with its [`Spend`]; every origin request the read path
//! starts on its behalf is charged to it when it is started — a shared HEAD or page fetch
//! by whoever starts it, not by those who join it — so the count is known before the
//! answer's head leaves (`wire::ORIGIN_REQUESTS`). A request the budget cannot pay is not
//! started. Tasks the read path spawns for a read carry its spend along ([`carry`]).
//! Outside any scope (prewarming, the S3 surface's writes) nothing is counted or refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

tokio::task_local! {
    static SPEND: Arc<Spend>;
}

/// The origin requests and bytes one read has started, and its budget.
#[derive(Debug, Default)]
pub struct Spend {
    budget: Option<u64>,
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Spend {
    pub fn new(budget: Option<u64>) -> Arc<Self> {
        Arc::new(Self { budget, ..Default::default() })
    }

    /// Charges one origin request asking for `bytes`; false (and nothing charged) when the
    /// budget is spent.
    fn try_charge(&self, bytes: u64) -> bool {
        let admitted = self
            .requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match self.budget {
                Some(b) if n >= b => None,
                _ => Some(n + 1),
            })
            .is_ok();
        if admitted {
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        admitted
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Origin requests the budget still allows (`None`: no budget).
    pub fn remaining(&self) -> Option<u64> {
        self.budget.map(|b| b.saturating_sub(self.requests()))
    }
}

/// Runs `f` as the read `spend` accounts for.
pub async fn scope<F: Future>(spend: Arc<Spend>, f: F) -> F::Output {
    SPEND.scope(spend, f).await
}

/// `f` with the current read's spend, if any — for a task spawned on the read's behalf.
pub fn carry<F: Future>(f: F) -> impl Future<Output = F::Output> {
    let spend = SPEND.try_with(Arc::clone).ok();
    async move {
        match spend {
            Some(s) => SPEND.scope(s, f).await,
            None => f.await,
        }
    }
}

/// Charges the current read for one origin request about to start; false: its budget is
/// spent and the request must not be made. True outside any read.
pub fn charge(bytes: u64) -> bool {
    SPEND.try_with(|s| s.try_charge(bytes)).unwrap_or(true)
}

/// Adds `bytes` to an origin request already charged, once its answer says how many it
/// holds (a first read asks for more than a small object has).
pub fn add_bytes(bytes: u64) {
    let _ = SPEND.try_with(|s| s.bytes.fetch_add(bytes, Ordering::Relaxed));
}

/// Origin requests the current read's budget still allows (`None`: no budget, or outside
/// any read).
pub fn remaining() -> Option<u64> {
    SPEND.try_with(|s| s.remaining()).ok().flatten()
}

/// Whether the current read may start another origin request.
pub fn affordable() -> bool {
    SPEND.try_with(|s| s.remaining() != Some(0)).unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_stop_at_the_budget_and_nothing_is_counted_outside_a_read() {
        assert!(charge(10), "outside a read nothing is refused");
        let s = Spend::new(Some(2));
        let inner = s.clone();
        scope(s.clone(), async move {
            assert!(affordable());
            assert!(charge(100));
            assert!(carry(async { charge(50) }).await, "a carried task charges the same read");
            assert!(!affordable());
            assert!(!charge(1), "a third request is over a budget of 2");
            assert_eq!(inner.remaining(), Some(0));
        })
        .await;
        assert_eq!((s.requests(), s.bytes()), (2, 150), "a refused request costs nothing");
        let free = Spend::new(None);
        scope(free.clone(), async { (0..5).for_each(|_| assert!(charge(1))) }).await;
        assert_eq!((free.requests(), free.remaining()), (5, None));
    }
}
