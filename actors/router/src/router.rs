//! The router actor: decodes a request (FQMN or JSON-RPC), has IAM admit the caller,
//! dispatches to the service, and shapes the reply. Stateless apart from the service
//! addresses, so each request runs as its own future and none waits for another.

use actix::prelude::*;
use cmesh_common::rpc::{self, RpcRequest, RpcResponse, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR};
use cmesh_common::time::unix_millis;
use cmesh_common::{CmtpError, Method, Status};
use cmesh_events::Emit;
use cmesh_iam::{Admit, Authorize, Caller, Credentials, SessionIssuer, SignedRequest};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::fqmn::{Fqmn, READ_VERB};
use crate::request::{Endpoint, Inbound, Reply, FORWARDED_HEADER};
use crate::services::{mailbox, Services};

/// How many names may point at names before the router gives up (loops).
const MAX_RESOLVE_DEPTH: usize = 4;
/// How long a node waits for the node that holds a client's session.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Most requests in one JSON-RPC batch.
pub const MAX_BATCH: usize = 100;

pub struct RouterActor {
    services: Services,
}

impl RouterActor {
    pub fn new(services: Services) -> Self {
        RouterActor { services }
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;
}

/// Routes one request from the front door.
#[derive(Message)]
#[rtype(result = "Reply")]
pub struct Route(pub Inbound);

impl Handler<Route> for RouterActor {
    type Result = ResponseFuture<Reply>;

    fn handle(&mut self, msg: Route, _: &mut Context<Self>) -> Self::Result {
        let services = self.services.clone();
        Box::pin(async move {
            let inbound = msg.0;
            match inbound.endpoint {
                Endpoint::Fqmn => route_fqmn(&services, inbound).await,
                Endpoint::Rpc => route_rpc(&services, inbound).await,
            }
        })
    }
}

/// What a request names: a method the node serves with its params, or why it names
/// nothing (404, said once the caller is admitted: an unknown method needs credentials,
/// as every method does by default).
type Target = Result<(Method, Value), CmtpError>;

/// A method name as a client sent it.
fn method_named(name: &str) -> Result<Method, CmtpError> {
    name.parse::<Method>()
        .map_err(|e| CmtpError::not_found(format!("{e} (see README)")).with_rpc_code(METHOD_NOT_FOUND))
}

/// The method an FQMN stands for, and its params.
fn method_of(fqmn: &Fqmn) -> Target {
    let args = |a: &Option<Value>| a.clone().unwrap_or(Value::Null);
    Ok(match fqmn {
        Fqmn::Iam { method, args: a } => (method_named(&format!("iam.{method}"))?, args(a)),
        Fqmn::State {
            write,
            context,
            method,
            args: a,
        } => (
            context_method(*write),
            json!({ "context": context, "method": method, "args": args(a) }),
        ),
        Fqmn::Assembly {
            write,
            version_req,
            context,
            method,
            args: a,
        } => (
            context_method(*write),
            json!({ "context": context, "method": method, "args": args(a), "version": version_req }),
        ),
        Fqmn::Context { context } => (Method::CtxRoot, json!({ "context": context })),
        Fqmn::Resolve { name, .. } => (Method::RegistrarResolve, json!({ "name": name })),
        Fqmn::RegistrarCall { write, method, params } => {
            let found = method_named(&format!("registrar.{method}"))?;
            let is_write = matches!(
                found,
                Method::RegistrarRegister | Method::RegistrarTransfer | Method::RegistrarRelease
            );
            if is_write != *write {
                let (has, hint) = if is_write { ("writes", "RW:") } else { ("reads", "R:") };
                return Err(CmtpError::not_found(format!(
                    "the registrar has no {} method `{method}`: `{method}` {has}, send {hint}{method}",
                    if *write { "write" } else { "read" }
                )));
            }
            (found, args(params))
        }
        Fqmn::Events { topic, verb } => {
            if let Some(verb) = verb {
                return Err(CmtpError::not_found(format!(
                    "events have no verb `{verb}`: `E:{topic}:{READ_VERB}` (or just `E:{topic}`) reads them"
                )));
            }
            // Recent events are kept under the topic's canonical form (`R:<name>:<kind>`, …).
            (Method::EventsRecent, json!({ "topic": topic.to_string() }))
        }
        Fqmn::Publish { topic, payload } => (
            Method::EventsPublish,
            json!({ "topic": topic.to_string(), "data": payload.to_value() }),
        ),
        Fqmn::Consensus { write, body } => (
            if *write {
                Method::ConsensusWrite
            } else {
                Method::ConsensusRead
            },
            json!({ "body": body }),
        ),
        Fqmn::Router { method, args: a } => (method_named(&format!("router.{method}"))?, args(a)),
    })
}

/// `ctx.call` for a write (a transaction), `ctx.view` for a read.
fn context_method(write: bool) -> Method {
    if write {
        Method::CtxCall
    } else {
        Method::CtxView
    }
}

fn admission_event(method: &str, caller: &Result<Caller, CmtpError>) -> Emit {
    let (kind, data) = match caller {
        Ok(caller) => (
            "dispatched",
            json!({ "method": method, "caller": caller.address, "at": unix_millis() }),
        ),
        Err(e) => (
            "denied",
            json!({ "method": method, "status": e.status.0, "message": e.message, "at": unix_millis() }),
        ),
    };
    Emit::new("router", kind, Vec::new(), data)
}

/// Has IAM admit the caller for `method` (`None`: a method the node does not serve, named
/// `name` by the client), and notes the outcome as a lifecycle event in `trace`.
async fn admit(
    services: &Services,
    credentials: Credentials,
    method: Option<Method>,
    name: &str,
    trace: &mut Vec<Emit>,
) -> Result<Caller, CmtpError> {
    let caller = services
        .iam
        .send(Admit { credentials, method })
        .await
        .map_err(mailbox("IAM"))
        .and_then(|r| r);
    trace.push(admission_event(name, &caller));
    caller
}

async fn route_fqmn(services: &Services, inbound: Inbound) -> Reply {
    let text = match decode_fqmn_payload(&inbound) {
        Ok(text) => text,
        Err(e) => return Reply::error(&e),
    };
    let fqmn: Fqmn = match text.parse() {
        Ok(fqmn) => fqmn,
        Err(e) => return Reply::error(&CmtpError::bad_request(format!("malformed FQMN: {e}"))),
    };
    let credentials = inbound.bearer.map(Credentials::Bearer).unwrap_or(Credentials::None);
    let mut trace = Vec::with_capacity(1);
    let result = async {
        let target = method_of(&fqmn);
        let method = target.as_ref().ok().map(|(method, _)| *method);
        let name = method.map_or_else(|| fqmn.service_letter().to_string(), |m| m.name().to_string());
        let caller = admit(services, credentials, method, &name, &mut trace).await?;
        run_fqmn(services, &caller, fqmn, target).await
    }
    .await;
    let reply = match result {
        Ok(value) => Reply::ok(value),
        Err(e) => Reply::error(&e),
    };
    reply.with_events(trace)
}

fn decode_fqmn_payload(inbound: &Inbound) -> Result<String, CmtpError> {
    match inbound.encoding {
        crate::request::Encoding::Json => std::str::from_utf8(&inbound.payload)
            .map(str::to_string)
            .map_err(|_| CmtpError::bad_request("an FQMN payload is UTF-8 text")),
        crate::request::Encoding::MsgPack => rmp_serde::from_slice::<String>(&inbound.payload)
            .map_err(|e| CmtpError::bad_request(format!("invalid MessagePack: expected an FQMN string: {e}"))),
    }
}

/// Runs an admitted FQMN (`target`: what it names); names are resolved and their targets
/// run in turn, each target's method checked against the caller's permissions.
async fn run_fqmn(services: &Services, caller: &Caller, mut fqmn: Fqmn, named: Target) -> Result<Value, CmtpError> {
    let mut named = named;
    for _ in 0..=MAX_RESOLVE_DEPTH {
        let Fqmn::Resolve { name, args } = fqmn else {
            let (method, params) = named?;
            return services.call(caller, method, params).await;
        };
        let record = services
            .call(caller, Method::RegistrarResolve, json!({ "name": name }))
            .await?;
        let target = record.get("target").and_then(Value::as_str).unwrap_or_default();
        let next: Fqmn = target.parse().map_err(|e| {
            CmtpError::new(
                Status::UNPROCESSABLE,
                format!("`{name}` points at `{target}`, which is not a valid FQMN: {e}"),
            )
        })?;
        let next = next.with_args(args);
        named = method_of(&next);
        let (method, _) = named.as_ref().map_err(Clone::clone)?;
        services
            .iam
            .send(Authorize {
                caller: caller.clone(),
                method: *method,
            })
            .await
            .map_err(mailbox("IAM"))??;
        fqmn = next;
    }
    Err(CmtpError::new(
        Status::UNPROCESSABLE,
        format!("names point at names more than {MAX_RESOLVE_DEPTH} deep (a loop?)"),
    ))
}

async fn route_rpc(services: &Services, inbound: Inbound) -> Reply {
    let value = match inbound.encoding.decode(&inbound.payload) {
        Ok(value) => value,
        Err(message) => {
            return rpc_error_reply(Value::Null, &CmtpError::bad_request(message).with_rpc_code(PARSE_ERROR))
        }
    };
    let bearer = inbound.bearer;
    let forwarded = inbound.forwarded;
    let mut trace = Vec::new();
    let reply = match value {
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_BATCH {
                let e = CmtpError::bad_request(format!("a batch holds 1 to {MAX_BATCH} requests"))
                    .with_rpc_code(INVALID_REQUEST);
                return rpc_error_reply(Value::Null, &e);
            }
            let mut responses = Vec::with_capacity(items.len());
            for item in items {
                if let Some(response) = rpc_one(services, item, bearer.clone(), forwarded, &mut trace).await {
                    responses.push(json!(response));
                }
            }
            Reply::ok(Value::Array(responses))
        }
        single => match rpc_one(services, single, bearer, forwarded, &mut trace).await {
            Some(response) => {
                let status = response
                    .error
                    .as_ref()
                    .and_then(|e| e.data.as_ref())
                    .and_then(|d| d.get("status"))
                    .and_then(Value::as_u64)
                    .map(|s| Status(s as u16))
                    .unwrap_or(Status::OK);
                let error = response.error.as_ref().map(|e| e.message.clone());
                Reply {
                    status,
                    body: json!(response),
                    error,
                    events: Vec::new(),
                }
            }
            // A notification gets an empty reply: NATS requests always expect one.
            None => Reply::ok(Value::Null),
        },
    };
    reply.with_events(trace)
}

fn rpc_error_reply(id: Value, error: &CmtpError) -> Reply {
    Reply {
        status: error.status,
        body: json!(RpcResponse::failure(id, error)),
        error: Some(error.message.clone()),
        events: Vec::new(),
    }
}

/// The session a request depends on: `iam.login`'s, or a signed request's `id`.
fn session_of(raw: &Value) -> Option<&str> {
    if raw.get("method").and_then(Value::as_str) == Some(Method::IamLogin.name()) {
        return raw.pointer("/params/session").and_then(Value::as_str);
    }
    raw.get("signature")?;
    raw.get("id").and_then(Value::as_str)
}

/// A client's challenge and its next request may reach different nodes of the queue
/// group; the session's id names the node that holds it, and the request goes there.
async fn forward_to_issuer(services: &Services, raw: &Value) -> Option<RpcResponse> {
    let session = session_of(raw)?.to_string();
    let issuer = services.iam.send(SessionIssuer { session }).await.ok()??;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(FORWARDED_HEADER, services.node.to_string().as_str());
    let payload = bytes::Bytes::from(serde_json::to_vec(raw).ok()?);
    let request = services
        .client
        .request_with_headers(format!("cmesh.node.{issuer}.rpc"), headers, payload);
    let id = raw.get("id").cloned().unwrap_or(Value::Null);
    let failure = |message: String| Some(RpcResponse::failure(id.clone(), &CmtpError::unavailable(message)));
    match tokio::time::timeout(FORWARD_TIMEOUT, request).await {
        Ok(Ok(reply)) => serde_json::from_slice(&reply.payload)
            .ok()
            .or_else(|| failure(format!("node {issuer}, which holds the session, answered garbage"))),
        Ok(Err(e)) => failure(format!("node {issuer}, which holds the session, is unreachable: {e}")),
        Err(_) => failure(format!(
            "node {issuer}, which holds the session, did not answer in time"
        )),
    }
}

/// One JSON-RPC request; `None` for a notification (no `id`), which gets no response.
async fn rpc_one(
    services: &Services,
    raw: Value,
    bearer: Option<String>,
    forwarded: bool,
    trace: &mut Vec<Emit>,
) -> Option<RpcResponse> {
    if !forwarded {
        if let Some(response) = forward_to_issuer(services, &raw).await {
            return raw.get("id").is_some().then_some(response);
        }
    }
    let request = match RpcRequest::deserialize(&raw) {
        Ok(request) => request,
        Err(e) => {
            let id = raw.get("id").cloned().unwrap_or(Value::Null);
            let error =
                CmtpError::bad_request(format!("not a JSON-RPC 2.0 request: {e}")).with_rpc_code(INVALID_REQUEST);
            return Some(RpcResponse::failure(id, &error));
        }
    };
    let id = request.id.clone();
    let response_id = id.clone().unwrap_or(Value::Null);
    let result = async {
        if request.jsonrpc != "2.0" {
            return Err(CmtpError::bad_request("`jsonrpc` must be \"2.0\"").with_rpc_code(INVALID_REQUEST));
        }
        let credentials = match (&request.signature, request.nonce, &bearer) {
            (Some(signature), Some(nonce), _) => {
                let session = request.id.as_ref().and_then(Value::as_str).ok_or_else(|| {
                    CmtpError::new(Status::UNAUTHORIZED, "a signed request's `id` is its session (0x-hex)")
                        .with_rpc_code(rpc::SESSION_ERROR)
                })?;
                Credentials::Signed(SignedRequest {
                    raw,
                    session: session.to_string(),
                    nonce,
                    signature: signature.clone(),
                })
            }
            (Some(_), None, _) => {
                return Err(CmtpError::new(Status::UNAUTHORIZED, "a signed request needs a `nonce`")
                    .with_rpc_code(rpc::NONCE_ERROR))
            }
            (None, _, Some(token)) => Credentials::Bearer(token.clone()),
            (None, _, None) => Credentials::None,
        };
        let method = method_named(&request.method);
        let caller = admit(
            services,
            credentials,
            method.as_ref().ok().copied(),
            &request.method,
            trace,
        )
        .await?;
        services.call(&caller, method?, request.params).await
    }
    .await;
    id.as_ref()?;
    Some(match result {
        Ok(value) => RpcResponse::success(response_id, value),
        Err(e) => RpcResponse::failure(response_id, &e),
    })
}
