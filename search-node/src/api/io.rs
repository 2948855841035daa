//! Every answer that reads a table accounts for its own I/O: what lance asked for, what
//! this node's page cache answered, the reads sent to cache nodes, what those cost at the
//! origin, and the time spent waiting with I/O outstanding — in the answer's headers, in a
//! JSON query answer that asks for it (`"with_io": true`), and in per-table counters.
//!
//! A request may also cap what it may cost at the origin (`x-lakecache-max-origin-requests`,
//! `x-lakecache-cache-only` or the query body's `max_origin_requests` / `cache_only`): the
//! cache nodes refuse any read beyond it before asking the origin, and the answer is a 412
//! that says so, not a slow cold query.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use lakecache_fleet::account::{IoAccount, IoSnapshot};

use crate::error::{ApiError, ApiResult};

pub const QUERY_ORIGIN_REQUESTS: &str = "searchnode_query_origin_requests_total";
pub const QUERY_ORIGIN_BYTES: &str = "searchnode_query_origin_bytes_total";
pub const QUERY_FLEET_REQUESTS: &str = "searchnode_query_fleet_requests_total";
pub const QUERY_FLEET_BYTES: &str = "searchnode_query_fleet_bytes_total";
pub const QUERY_PAGE_CACHE_HITS: &str = "searchnode_query_page_cache_hits_total";
/// In microseconds: the counters are integers, and a count of whole seconds would drop
/// every fast query's share.
pub const QUERY_IO_WAIT: &str = "searchnode_query_io_wait_microseconds_total";
pub const QUERY_BUDGET_REFUSALS: &str = "searchnode_query_budget_refusals_total";

/// The `table` label of SQL statements' accounts (a statement may read several tables).
pub const SQL_TABLE: &str = "(sql)";

const MAX_ORIGIN_REQUESTS: &str = "x-lakecache-max-origin-requests";
const CACHE_ONLY: &str = "x-lakecache-cache-only";

/// A table's account counters at zero when it is first opened.
pub fn register_table(id: &str) {
    for c in [
        QUERY_ORIGIN_REQUESTS,
        QUERY_ORIGIN_BYTES,
        QUERY_FLEET_REQUESTS,
        QUERY_FLEET_BYTES,
        QUERY_PAGE_CACHE_HITS,
        QUERY_IO_WAIT,
        QUERY_BUDGET_REFUSALS,
    ] {
        // Created, not reset: a table's refusals come before its first successful open.
        metrics::counter!(c, "table" => id.to_string()).increment(0);
    }
}

/// The account of one request, with the origin budget it names (the tighter of the
/// headers and the body's fields; `cache_only` is a budget of 0).
pub fn account(h: &HeaderMap, body_cache_only: bool, body_max: Option<u64>) -> ApiResult<Arc<IoAccount>> {
    let text = |n: &str| h.get(n).map(|v| v.to_str().unwrap_or("\u{fffd}").trim().to_string());
    let header_max = match text(MAX_ORIGIN_REQUESTS) {
        None => None,
        Some(t) => Some(t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "{MAX_ORIGIN_REQUESTS} must be a whole number of requests, got {t:?}"
            ))
        })?),
    };
    let header_cache_only = match text(CACHE_ONLY).as_deref() {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(t) => {
            return Err(ApiError::bad_request(format!("{CACHE_ONLY} must be true or false, got {t:?}")));
        }
    };
    let zero = (body_cache_only || header_cache_only).then_some(0);
    let budget = [zero, header_max, body_max].into_iter().flatten().min();
    Ok(IoAccount::new(budget))
}

/// `ds` reading through `account`.
pub fn accounted(ds: Arc<lance::Dataset>, account: &Arc<IoAccount>) -> Arc<lance::Dataset> {
    let w: Arc<dyn lance_io::object_store::WrappingObjectStore> =
        Arc::new(crate::store::account::Accounted(account.clone()));
    Arc::new(ds.with_object_store_wrappers([w]))
}

/// `e`, or — when a cache node refused a read for the request's budget — the 412 that
/// says so.
pub fn refusal_or(e: ApiError, account: &IoAccount, table: &str) -> ApiError {
    if !account.refused() {
        return e;
    }
    metrics::counter!(QUERY_BUDGET_REFUSALS, "table" => table.to_string()).increment(1);
    let message = match account.budget() {
        Some(0) => format!(
            "Table '{table}': part of what this request reads is not cached, and it is cache-only \
             (x-lakecache-cache-only): nothing was read from the origin. Prewarm the table, or \
             send it without cache_only"
        ),
        Some(n) => format!(
            "Table '{table}': this request needs more than its {n} origin request(s) \
             (x-lakecache-max-origin-requests): it was stopped before asking the origin for \
             more. Prewarm the table, or raise the budget"
        ),
        None => e.message.clone(),
    };
    ApiError::new(StatusCode::PRECONDITION_FAILED, message)
}

/// `r` with the account in its headers, counted under `table`.
pub fn with_io(mut r: Response, table: &str, account: &IoAccount) -> Response {
    let s = account.snapshot();
    record(table, &s);
    let h = r.headers_mut();
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put("x-lakecache-origin-requests", s.origin_requests.to_string());
    put("x-lakecache-origin-bytes", s.origin_bytes.to_string());
    put("x-lakecache-fleet-requests", s.fleet_requests.to_string());
    put("x-lakecache-fleet-bytes", s.fleet_bytes.to_string());
    put("x-lakecache-page-cache-hits", s.page_cache_hits.to_string());
    put("x-lakecache-io-wait-ms", format!("{:.3}", s.io_wait_us as f64 / 1000.0));
    put("x-lakecache-io", serde_json::to_string(&s).unwrap_or_default());
    r
}

fn record(table: &str, s: &IoSnapshot) {
    let t = || table.to_string();
    metrics::counter!(QUERY_ORIGIN_REQUESTS, "table" => t()).increment(s.origin_requests);
    metrics::counter!(QUERY_ORIGIN_BYTES, "table" => t()).increment(s.origin_bytes);
    metrics::counter!(QUERY_FLEET_REQUESTS, "table" => t()).increment(s.fleet_requests);
    metrics::counter!(QUERY_FLEET_BYTES, "table" => t()).increment(s.fleet_bytes);
    metrics::counter!(QUERY_PAGE_CACHE_HITS, "table" => t()).increment(s.page_cache_hits);
    metrics::counter!(QUERY_IO_WAIT, "table" => t()).increment(s.io_wait_us);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn budgets_come_from_headers_and_body_and_the_tightest_wins() {
        let b = |hs: &[(&'static str, &'static str)], co: bool, max: Option<u64>| {
            account(&h(hs), co, max).map(|a| a.budget()).map_err(|e| e.message)
        };
        assert_eq!(b(&[], false, None), Ok(None));
        assert_eq!(b(&[(MAX_ORIGIN_REQUESTS, "7")], false, None), Ok(Some(7)));
        assert_eq!(b(&[(MAX_ORIGIN_REQUESTS, " 7 ")], false, Some(3)), Ok(Some(3)));
        assert_eq!(b(&[(CACHE_ONLY, "true")], false, Some(3)), Ok(Some(0)));
        assert_eq!(b(&[(CACHE_ONLY, "false")], true, None), Ok(Some(0)), "the body asks cache-only");
        assert!(b(&[(MAX_ORIGIN_REQUESTS, "-1")], false, None).unwrap_err().contains("whole number"));
        assert!(b(&[(MAX_ORIGIN_REQUESTS, "ten")], false, None).is_err());
        assert!(b(&[(CACHE_ONLY, "yes please")], false, None).unwrap_err().contains("true or false"));
    }
}
