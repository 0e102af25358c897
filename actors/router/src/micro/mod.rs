//! NATS micro services protocol (ADR-32): every cmesh node is an instance of the
//! service `cmesh`, so `nats micro ls|info|stats|ping` work against the mesh.
//!
//! We implement the discovery side (`$SRV.PING|INFO|STATS`, each also as
//! `$SRV.<VERB>.<name>` and `$SRV.<VERB>.<name>.<id>`) ourselves instead of using
//! `async_nats::service`, because its error replies carry an empty body. Our error
//! replies carry a JSON body *and* the `Nats-Service-Error` / `Nats-Service-Error-Code`
//! headers, and must still be counted as errors in `STATS`. So the node subscribes to its
//! endpoint subjects itself and reports each handled request with [`Micro::record`];
//! this module answers the `$SRV` requests from those counters, with the JSON schema of
//! the official clients (the `io.nats.micro.v1.*_response` types).
//!
//! Driving it: [`Micro::start`] subscribes and returns a [`MicroTask`], a `Send +
//! 'static` future that answers the discovery requests. The caller spawns it on the
//! runtime it lives in (`tokio::spawn(task)` or, inside an actix arbiter,
//! `actix::spawn(task)`). It ends after [`Micro::stop`], when every [`Micro`] handle is
//! dropped, or when the connection closes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::{Client, HeaderMap, Message, Subscriber};
use bytes::Bytes;
use cmesh_common::cmtp;
use futures::channel::oneshot;
use futures::future::BoxFuture;
use futures::stream::SelectAll;
use futures::{FutureExt, StreamExt};
use serde::Serialize;

/// Prefix of all ADR-32 discovery subjects.
pub const SERVICE_API_PREFIX: &str = "$SRV";
/// Header carrying the error text of an error reply (ADR-32).
pub const NATS_SERVICE_ERROR: &str = "Nats-Service-Error";
/// Header carrying the error code of an error reply (ADR-32).
pub const NATS_SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// Header carrying the content type of a reply.
pub const CONTENT_TYPE: &str = "Content-Type";
/// Longest error text, in bytes, put into a header or into `last_error`.
pub const MAX_ERROR_LEN: usize = 256;

const PING_TYPE: &str = "io.nats.micro.v1.ping_response";
const INFO_TYPE: &str = "io.nats.micro.v1.info_response";
const STATS_TYPE: &str = "io.nats.micro.v1.stats_response";
const VERBS: [&str; 3] = ["PING", "INFO", "STATS"];

/// Who this service instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIdentity {
    /// Service name (`cmesh`); only `A-Z a-z 0-9 - _` (ADR-33).
    pub name: String,
    /// Instance id, unique on the bus (the node uses a nuid).
    pub id: String,
    /// SemVer version.
    pub version: String,
    pub description: String,
    pub metadata: HashMap<String, String>,
}

/// One endpoint the node serves (it subscribes to `subject` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub name: String,
    pub subject: String,
    pub queue_group: String,
    pub metadata: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MicroError {
    #[error("invalid service name {0:?}: only A-Z, a-z, 0-9, '-' and '_' are allowed")]
    InvalidName(String),
    #[error("invalid service id {0:?}: must be one non-empty subject token")]
    InvalidId(String),
    #[error("invalid service version {0:?}: must be a SemVer version such as 1.2.3")]
    InvalidVersion(String),
    #[error("could not subscribe to {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error("could not encode a discovery reply: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Handle on a running service instance. Cheap to clone; [`Micro::record`] is the hot
/// path (one uncontended mutex per endpoint, no allocation on success).
#[derive(Clone)]
pub struct Micro {
    shared: Arc<Shared>,
    control: Arc<Control>,
}

/// The discovery responder returned by [`Micro::start`]; spawn it.
#[must_use = "the discovery subjects are only answered while this future is polled: spawn it"]
pub struct MicroTask(BoxFuture<'static, ()>);

impl Future for MicroTask {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_unpin(cx)
    }
}

impl std::fmt::Debug for MicroTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MicroTask")
    }
}

impl std::fmt::Debug for Micro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Micro")
            .field("name", &self.shared.identity.name)
            .field("id", &self.shared.identity.id)
            .finish()
    }
}

/// State read by the responder and written by `record`.
struct Shared {
    identity: ServiceIdentity,
    endpoints: Vec<EndpointSpec>,
    counters: Vec<Mutex<Counters>>,
    started: String,
}

/// Held only by `Micro` handles: dropping the last one cancels the responder.
struct Control {
    stop: Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
}

#[derive(Default)]
struct Counters {
    requests: u64,
    errors: u64,
    processing: Duration,
    /// `code:message`, as the official clients render it; empty when none yet.
    last_error: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Micro {
    /// Subscribes to the `$SRV` discovery subjects of this instance. Answering them is
    /// the job of the returned [`MicroTask`], which the caller must spawn.
    pub async fn start(
        client: Client,
        identity: ServiceIdentity,
        endpoints: Vec<EndpointSpec>,
    ) -> Result<(Micro, MicroTask), MicroError> {
        validate(&identity)?;

        let started = rfc3339_utc(SystemTime::now());
        let ping = Bytes::from(serde_json::to_vec(&PingJson {
            kind: PING_TYPE,
            name: &identity.name,
            id: &identity.id,
            version: &identity.version,
            metadata: &identity.metadata,
        })?);
        let info = Bytes::from(serde_json::to_vec(&InfoJson {
            kind: INFO_TYPE,
            name: &identity.name,
            id: &identity.id,
            version: &identity.version,
            metadata: &identity.metadata,
            description: &identity.description,
            endpoints: endpoints
                .iter()
                .map(|e| EndpointInfoJson {
                    name: &e.name,
                    subject: &e.subject,
                    queue_group: &e.queue_group,
                    metadata: &e.metadata,
                })
                .collect(),
        })?);

        let mut subscribers = SelectAll::new();
        for verb in VERBS {
            for subject in [
                format!("{SERVICE_API_PREFIX}.{verb}"),
                format!("{SERVICE_API_PREFIX}.{verb}.{}", identity.name),
                format!("{SERVICE_API_PREFIX}.{verb}.{}.{}", identity.name, identity.id),
            ] {
                let sub = client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|source| MicroError::Subscribe { subject, source })?;
                subscribers.push(sub);
            }
        }

        let shared = Arc::new(Shared {
            counters: endpoints.iter().map(|_| Mutex::default()).collect(),
            identity,
            endpoints,
            started,
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let control = Arc::new(Control {
            stop: Mutex::new(Some(stop_tx)),
        });
        tracing::info!(
            name = %shared.identity.name,
            id = %shared.identity.id,
            endpoints = shared.endpoints.len(),
            "micro service instance started"
        );
        let responder = Responder {
            client,
            shared: shared.clone(),
            ping,
            info,
        };
        let task = MicroTask(responder.run(subscribers, stop_rx).boxed());
        Ok((Micro { shared, control }, task))
    }

    /// Records one handled request on endpoint `index` (position in the `endpoints`
    /// given to [`Micro::start`]): its processing time and, for an error reply, the
    /// error text and code (shown as `last_error`, counted in `num_errors`).
    pub fn record(&self, index: usize, elapsed: Duration, error: Option<(&str, u16)>) {
        let Some(counters) = self.shared.counters.get(index) else {
            tracing::warn!(index, "micro: record on an unknown endpoint index");
            return;
        };
        let mut c = lock(counters);
        c.requests += 1;
        c.processing = c.processing.saturating_add(elapsed);
        if let Some((message, code)) = error {
            c.errors += 1;
            let message = sanitize_header_value(message);
            let message = if message.is_empty() {
                cmtp::Status(code).reason()
            } else {
                &message
            };
            c.last_error.clear();
            let _ = write!(c.last_error, "{code}:{message}");
        }
    }

    /// The instance id (as passed in the identity).
    pub fn id(&self) -> &str {
        &self.shared.identity.id
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.shared.identity.name
    }

    /// Unsubscribes the discovery subjects and waits until the responder has done so
    /// (and flushed the connection). Idempotent. Returns at once if the responder has
    /// already ended; it waits for the responder, so its [`MicroTask`] must be spawned.
    pub async fn stop(&self) {
        let Some(stop) = lock(&self.control.stop).take() else {
            return;
        };
        let (ack_tx, ack_rx) = oneshot::channel();
        if stop.send(ack_tx).is_err() {
            // The responder has already ended (connection closed or task dropped).
            return;
        }
        let _ = ack_rx.await;
    }
}

struct Responder {
    client: Client,
    shared: Arc<Shared>,
    ping: Bytes,
    info: Bytes,
}

impl Responder {
    async fn run(self, mut subscribers: SelectAll<Subscriber>, stop: oneshot::Receiver<oneshot::Sender<()>>) {
        // `Receiver` reports itself terminated once its sender is gone, which would make
        // `select!` skip it; `Fuse` only terminates after yielding, so a drop is seen.
        let mut stop = stop.fuse();
        loop {
            futures::select! {
                message = subscribers.next() => match message {
                    Some(message) => self.answer(message).await,
                    None => {
                        tracing::warn!(id = %self.shared.identity.id, "micro: discovery subscriptions closed");
                        return;
                    }
                },
                ack = stop => {
                    for sub in subscribers.iter_mut() {
                        if let Err(error) = sub.unsubscribe().await {
                            tracing::debug!(%error, "micro: unsubscribe failed");
                        }
                    }
                    if let Err(error) = self.client.flush().await {
                        tracing::debug!(%error, "micro: flush after unsubscribe failed");
                    }
                    tracing::info!(id = %self.shared.identity.id, "micro service instance stopped");
                    if let Ok(ack) = ack {
                        let _ = ack.send(());
                    }
                    return;
                }
            }
        }
    }

    async fn answer(&self, message: Message) {
        let Some(reply) = message.reply else {
            return;
        };
        let verb = message.subject.as_str().split('.').nth(1).unwrap_or("");
        let payload = match verb {
            "PING" => self.ping.clone(),
            "INFO" => self.info.clone(),
            "STATS" => match self.stats() {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::error!(%error, "micro: could not encode stats");
                    return;
                }
            },
            _ => return,
        };
        if let Err(error) = self.client.publish(reply, payload).await {
            tracing::warn!(%error, verb, "micro: could not publish discovery reply");
        }
    }

    fn stats(&self) -> Result<Bytes, serde_json::Error> {
        let s = &self.shared;
        let endpoints = s
            .endpoints
            .iter()
            .zip(&s.counters)
            .map(|(e, counters)| {
                let c = lock(counters);
                let total = nanos(c.processing);
                EndpointStatsJson {
                    name: &e.name,
                    subject: &e.subject,
                    queue_group: &e.queue_group,
                    num_requests: c.requests,
                    num_errors: c.errors,
                    last_error: c.last_error.clone(),
                    processing_time: total,
                    average_processing_time: total.checked_div(c.requests).unwrap_or(0),
                }
            })
            .collect();
        serde_json::to_vec(&StatsJson {
            kind: STATS_TYPE,
            name: &s.identity.name,
            id: &s.identity.id,
            version: &s.identity.version,
            metadata: &s.identity.metadata,
            started: &s.started,
            endpoints,
        })
        .map(Bytes::from)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Serialize)]
struct PingJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    id: &'a str,
    version: &'a str,
    metadata: &'a HashMap<String, String>,
}

#[derive(Serialize)]
struct InfoJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    id: &'a str,
    version: &'a str,
    metadata: &'a HashMap<String, String>,
    description: &'a str,
    endpoints: Vec<EndpointInfoJson<'a>>,
}

#[derive(Serialize)]
struct EndpointInfoJson<'a> {
    name: &'a str,
    subject: &'a str,
    queue_group: &'a str,
    metadata: &'a HashMap<String, String>,
}

#[derive(Serialize)]
struct StatsJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    id: &'a str,
    version: &'a str,
    metadata: &'a HashMap<String, String>,
    /// RFC 3339, UTC.
    started: &'a str,
    endpoints: Vec<EndpointStatsJson<'a>>,
}

#[derive(Serialize)]
struct EndpointStatsJson<'a> {
    name: &'a str,
    subject: &'a str,
    queue_group: &'a str,
    num_requests: u64,
    num_errors: u64,
    last_error: String,
    /// Nanoseconds.
    processing_time: u64,
    /// Nanoseconds.
    average_processing_time: u64,
}

fn validate(identity: &ServiceIdentity) -> Result<(), MicroError> {
    let name = &identity.name;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(MicroError::InvalidName(name.clone()));
    }
    let id = &identity.id;
    if id.is_empty()
        || id
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control())
    {
        return Err(MicroError::InvalidId(id.clone()));
    }
    if !is_semver(&identity.version) {
        return Err(MicroError::InvalidVersion(identity.version.clone()));
    }
    Ok(())
}

/// SemVer 2.0: `MAJOR.MINOR.PATCH[-pre][+build]`, numbers without leading zeros.
fn is_semver(v: &str) -> bool {
    fn number(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    }
    fn idents(s: &str, numeric_rule: bool) -> bool {
        s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && (!numeric_rule || !p.bytes().all(|b| b.is_ascii_digit()) || number(p))
        })
    }
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let mut parts = core.split('.');
    let core_ok = (0..3).all(|_| parts.next().is_some_and(number)) && parts.next().is_none();
    core_ok && pre.is_none_or(|p| idents(p, true)) && build.is_none_or(|b| idents(b, false))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (Go's RFC3339Nano: trailing zeros trimmed).
fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Makes `s` safe as a NATS header value: control characters (CR, LF, ...) become
/// spaces, surrounding whitespace is trimmed, and the result is capped at
/// [`MAX_ERROR_LEN`] bytes on a char boundary. Borrows when nothing changes.
pub fn sanitize_header_value(s: &str) -> Cow<'_, str> {
    let s = s.trim();
    let mut end = s.len().min(MAX_ERROR_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let s = &s[..end];
    if s.chars().any(char::is_control) {
        let cleaned: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        Cow::Owned(cleaned.trim().to_owned())
    } else {
        Cow::Borrowed(s)
    }
}

/// Headers for an endpoint reply, so that all replies look alike:
/// `Cmtp-Version: CMTP/0`, `Cmtp-Status: <status>`, `Content-Type`, and for errors
/// `Nats-Service-Error: <message>` (sanitised, see [`sanitize_header_value`]; the
/// status reason when empty) and `Nats-Service-Error-Code: <status>`.
pub fn reply_headers(status: u16, content_type: &str, error_message: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let code = status.to_string();
    headers.insert(cmtp::HEADER_VERSION, cmtp::VERSION);
    headers.insert(cmtp::HEADER_STATUS, code.as_str());
    headers.insert(CONTENT_TYPE, sanitize_header_value(content_type).as_ref());
    if let Some(message) = error_message {
        let message = sanitize_header_value(message);
        let message = if message.is_empty() {
            cmtp::Status(status).reason()
        } else {
            message.as_ref()
        };
        headers.insert(NATS_SERVICE_ERROR, message);
        headers.insert(NATS_SERVICE_ERROR_CODE, code.as_str());
    }
    headers
}

#[cfg(test)]
mod tests;
