//! SQL over Arrow Flight SQL (gRPC), on its own listener (`[server] flight_listen`): what the
//! lancedb client's `execute_query` speaks (`PollFlightInfo`, then `DoGet` of each endpoint's
//! ticket, `CancelFlightInfo`), and what generic Flight SQL clients such as ADBC's driver
//! speak (`GetFlightInfo`, then `DoGet`). Same tables, API keys and limits as `POST /v1/sql`.
//!
//! Owns: the Flight service, its authentication (`x-api-key`, or `authorization: Bearer`,
//! metadata), the namespace a call names (`namespace-path`; lancedb sends `public` for the
//! default one) and the ticket format. Does not own: planning or running SQL (`engine::sql`).
//!
//! Stateless: the ticket carries the statement and namespace, and `DoGet` checks, plans and
//! runs it again under the caller's key. A ticket is therefore worth exactly what the SQL in
//! it is worth to whoever presents it; nothing is held between calls. Read-only: updates,
//! prepared statements, transactions, ingestion and catalog commands get a clear error.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::{Any, Command, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoResult, CancelStatus, Criteria, Empty, FlightData, FlightDescriptor,
    FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult,
    Ticket,
};
use futures::{Stream, StreamExt};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status, Streaming};

use super::AppState;
use crate::engine::results::ResultLimits;
use crate::engine::sql;
use crate::error::{ApiError, sanitize};

pub const FLIGHT_REQUESTS: &str = "searchnode_flight_requests_total";

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The statement a ticket stands for.
#[derive(Serialize, Deserialize)]
struct TicketBody {
    sql: String,
    namespace: String,
}

/// The Flight SQL service of a search node.
#[derive(Clone)]
pub struct FlightSql {
    st: Arc<AppState>,
}

/// An API error as a gRPC status, its message cleaned as the REST API's are.
fn status(e: ApiError) -> Status {
    let m = sanitize(&e.message);
    match e.status.as_u16() {
        400 | 413 | 422 => Status::invalid_argument(m),
        401 => Status::unauthenticated(m),
        403 => Status::permission_denied(m),
        404 => Status::not_found(m),
        408 | 504 => Status::deadline_exceeded(m),
        409 => Status::aborted(m),
        501 => Status::unimplemented(m),
        _ => Status::internal(m),
    }
}

fn count(method: &'static str, outcome: &'static str) {
    metrics::counter!(FLIGHT_REQUESTS, "method" => method, "outcome" => outcome).increment(1);
}

/// Counts the outcome of one call and passes it on.
fn counted<T>(method: &'static str, r: Result<T, Status>) -> Result<T, Status> {
    count(method, if r.is_ok() { "ok" } else { "error" });
    r
}

impl FlightSql {
    pub fn new(st: Arc<AppState>) -> Self {
        Self { st }
    }

    /// The tonic service, bounded: a call may take at most the REST API's request timeout,
    /// and a message is decoded up to 4 MiB (statements are at most 1 MiB).
    pub fn service(self) -> FlightServiceServer<FlightSql> {
        FlightServiceServer::new(self).max_decoding_message_size(4 << 20)
    }

    /// Serves on `listener` until `shutdown` resolves. HTTP/2 keep-alive pings find dead
    /// peers; `request_timeout` bounds every call (a result stream included).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let timeout = self.st.request_timeout;
        tonic::transport::Server::builder()
            .timeout(timeout)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_concurrent_streams(Some(256))
            .add_service(self.service())
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
            .await
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let md = req.metadata();
        let key = md.get("x-api-key").and_then(|v| v.to_str().ok()).or_else(|| {
            md.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
        });
        let known = |k: &str| {
            self.st
                .api_keys
                .iter()
                .any(|a| lakecache_common::auth::constant_time_eq(a.as_bytes(), k.as_bytes()))
        };
        match key {
            Some(k) if known(k) => Ok(()),
            None if self.st.anonymous => Ok(()),
            Some(_) => Err(Status::unauthenticated("Invalid API key")),
            None => Err(Status::unauthenticated(
                "Missing API key: send it as x-api-key (or authorization: Bearer <key>) metadata",
            )),
        }
    }

    /// The namespace a call names: `namespace-path` metadata, the root namespace when absent
    /// (or `public`, lancedb's name for the default one, unless a namespace has that name).
    fn namespace<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let ns = req.metadata().get("namespace-path").map(|v| v.to_str()).transpose();
        let ns = ns.map_err(|_| Status::invalid_argument("namespace-path must be ASCII"))?.unwrap_or("");
        if ns == "public" && !self.st.tables.has_namespace("public") {
            return Ok(String::new());
        }
        Ok(ns.to_string())
    }

    /// The SQL of a `CommandStatementQuery` descriptor; any other command is refused.
    fn query_of(descriptor: &FlightDescriptor) -> Result<String, Status> {
        let any = Any::decode(&*descriptor.cmd).map_err(|e| {
            Status::invalid_argument(format!("The descriptor is not a Flight SQL command: {e}"))
        })?;
        match Command::try_from(any) {
            Ok(Command::CommandStatementQuery(q)) => {
                if q.transaction_id.is_some() {
                    return Err(Status::invalid_argument(
                        "Transactions are not supported: SQL here is read-only",
                    ));
                }
                Ok(q.query)
            }
            Ok(
                Command::CommandStatementUpdate(_)
                | Command::CommandStatementIngest(_)
                | Command::CommandPreparedStatementUpdate(_),
            ) => Err(Status::invalid_argument("Only queries are allowed: SQL here is read-only")),
            Ok(other) => Err(Status::unimplemented(format!(
                "Flight SQL command {} is not supported; send a CommandStatementQuery",
                other.type_url()
            ))),
            Err(e) => Err(Status::invalid_argument(format!("Unknown Flight SQL command: {e}"))),
        }
    }

    /// Plans the statement (so a bad one fails here, with its message) and describes its
    /// answer: the schema and one endpoint whose ticket runs it.
    async fn info(
        &self,
        sql: String,
        namespace: String,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let planned = sql::plan(&self.st, &namespace, &sql).await.map_err(status)?;
        let handle = serde_json::to_vec(&TicketBody { sql, namespace })
            .map_err(|e| Status::internal(e.to_string()))?;
        let ticket = TicketStatementQuery { statement_handle: handle.into() }.as_any().encode_to_vec();
        FlightInfo::new().try_with_schema(&planned.schema).map_err(|e| Status::internal(e.to_string())).map(
            |i| {
                i.with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
                    .with_descriptor(descriptor)
                    .with_ordered(true)
            },
        )
    }

    async fn flight_info(&self, req: Request<FlightDescriptor>) -> Result<FlightInfo, Status> {
        self.authorize(&req)?;
        let namespace = self.namespace(&req)?;
        let descriptor = req.into_inner();
        let sql = Self::query_of(&descriptor)?;
        self.info(sql, namespace, descriptor).await
    }

    /// Runs a ticket's statement, streaming its batches within the answer limits.
    async fn run(&self, req: Request<Ticket>) -> Result<Boxed<FlightData>, Status> {
        self.authorize(&req)?;
        let any = Any::decode(&*req.get_ref().ticket)
            .map_err(|e| Status::invalid_argument(format!("Not a ticket of this server: {e}")))?;
        let Ok(Command::TicketStatementQuery(t)) = Command::try_from(any) else {
            return Err(Status::invalid_argument("Not a ticket of this server"));
        };
        let body: TicketBody = serde_json::from_slice(&t.statement_handle)
            .map_err(|_| Status::invalid_argument("Not a ticket of this server"))?;
        let planned = sql::plan(&self.st, &body.namespace, &body.sql).await.map_err(status)?;
        let st = self.st.clone();
        let stream = planned.df.execute_stream().await.map_err(|e| status(sql::sql_error(&st)(e)))?;
        let limits = ResultLimits::from(&self.st.limits);
        let (mut rows, mut bytes) = (0u64, 0u64);
        let batches = stream.map(move |b| {
            let b = b.map_err(|e| FlightError::Tonic(Box::new(status(sql::sql_error(&st)(e)))))?;
            rows += b.num_rows() as u64;
            bytes += b.get_array_memory_size() as u64;
            if rows > limits.max_rows {
                return Err(FlightError::Tonic(Box::new(status(limits.too_many_rows()))));
            }
            if bytes > limits.max_bytes {
                return Err(FlightError::Tonic(Box::new(Status::resource_exhausted(format!(
                    "The answer is larger than {} bytes, the most one answer may hold (limits.max_result_bytes)",
                    limits.max_bytes
                )))));
            }
            Ok(b)
        });
        let data = FlightDataEncoderBuilder::new()
            .with_schema(planned.schema)
            .build(batches)
            .map(|r| r.map_err(Status::from));
        Ok(deadline_bound(Box::pin(data), self.st.request_timeout))
    }
}

/// `data`, produced by a task that gives up once `limit` has passed since the call began:
/// a client that stops reading would otherwise hold the query (and its share of the SQL
/// memory pool) for as long as it keeps the connection, since HTTP/2 flow control just
/// stops pulling. The client then gets DeadlineExceeded instead of the rest, never a
/// silently shortened answer.
fn deadline_bound(mut data: Boxed<FlightData>, limit: Duration) -> Boxed<FlightData> {
    let deadline = tokio::time::Instant::now() + limit;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<FlightData, Status>>(2);
    tokio::spawn(async move {
        let expired = || {
            Status::deadline_exceeded(format!(
                "The answer was not sent within the request timeout ({} ms, server.request_timeout)",
                limit.as_millis()
            ))
        };
        loop {
            let item = match tokio::time::timeout_at(deadline, data.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => return,
                Err(_) => break,
            };
            let failed = item.is_err();
            match tokio::time::timeout_at(deadline, tx.send(item)).await {
                Ok(Ok(())) if !failed => {}
                // The error is on its way, or the client went away.
                Ok(_) => return,
                // The client stopped reading.
                Err(_) => break,
            }
        }
        // The query stops here (its memory goes back to the pool); the error waits for the
        // client to read on, so the answer can never end as if it were complete.
        drop(data);
        let _ = tx.send(Err(expired())).await;
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) }))
}

#[tonic::async_trait]
impl FlightService for FlightSql {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;
    type DoExchangeStream = Boxed<FlightData>;

    /// Keys travel as metadata on every call; a handshake only checks the one it carries.
    async fn handshake(
        &self,
        req: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        counted("handshake", self.authorize(&req))?;
        let out = futures::stream::iter([Ok(HandshakeResponse::default())]);
        Ok(Response::new(Box::pin(out)))
    }

    async fn list_flights(
        &self,
        _req: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        count("list_flights", "error");
        Err(Status::unimplemented("ListFlights is not supported: send a CommandStatementQuery"))
    }

    async fn get_flight_info(&self, req: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        counted("get_flight_info", self.flight_info(req).await).map(Response::new)
    }

    /// The query runs when its ticket is fetched, so the answer is complete at once: no
    /// descriptor to poll again.
    async fn poll_flight_info(&self, req: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        let info = counted("poll_flight_info", self.flight_info(req).await)?;
        Ok(Response::new(PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        }))
    }

    async fn get_schema(&self, req: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        let info = counted("get_schema", self.flight_info(req).await)?;
        Ok(Response::new(SchemaResult { schema: info.schema }))
    }

    async fn do_get(&self, req: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        counted("do_get", self.run(req).await).map(Response::new)
    }

    async fn do_put(
        &self,
        req: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        counted("do_put", self.authorize(&req))?;
        Err(Status::invalid_argument("Only queries are allowed: SQL here is read-only"))
    }

    async fn do_exchange(
        &self,
        _req: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        count("do_exchange", "error");
        Err(Status::unimplemented("DoExchange is not supported"))
    }

    /// `CancelFlightInfo`: nothing runs between calls, so there is nothing to stop.
    async fn do_action(&self, req: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        counted("do_action", self.authorize(&req))?;
        match req.get_ref().r#type.as_str() {
            "CancelFlightInfo" => {
                let result = CancelFlightInfoResult { status: CancelStatus::Cancelled as i32 };
                let body = arrow_flight::Result { body: result.encode_to_vec().into() };
                Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))))
            }
            other => Err(Status::unimplemented(format!("Action {other:?} is not supported"))),
        }
    }

    async fn list_actions(&self, _req: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        let cancel = ActionType {
            r#type: "CancelFlightInfo".into(),
            description: "Cancel a query (a no-op here: queries run when their ticket is fetched)".into(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(cancel)]))))
    }
}
