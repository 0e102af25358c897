//! FQMN — "fully qualified mesh name": the grammar, parser and canonical printer.
//!
//! An FQMN names a function on the mesh, e.g. `S:0x03389f0e08b9f:hello_world:["Dexter"]`.
//! The full grammar, the service table and every error message are in `docs/FQMN.md`.
//!
//! Why the grammar is shaped like this:
//!
//! * **Service prefix first.** The token before the first `:` picks the protected service
//!   (and whether the call writes), so the router can dispatch and authorize on a cheap,
//!   fixed-size token before looking at anything else.
//! * **Fixed-arity segments, split from the left; JSON last.** Each service has a known
//!   number of plain segments (context, method, ...) which never contain `:`. Whatever
//!   follows them is the arguments, taken verbatim as the *rest* of the string, so JSON
//!   arguments may contain `:` without any escaping.
//! * **Three spellings, one AST.** Seed 002 (CMesh) wrote prefixes as `0Sx:` and `0xS:`;
//!   both are accepted for compatibility, next to the short `S:`.
//! * **One canonical form.** [`Fqmn`]'s `Display` prints the short spelling, lower-case
//!   names and contexts, and compact JSON. Logs, audit hashes and registrar targets use
//!   it, so two spellings of the same call compare equal. Parsing the canonical form gives
//!   back the same AST, and printing is idempotent.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// Longest FQMN accepted by the parser, in bytes (checked before trimming).
pub const MAX_FQMN_LEN: usize = 64 * 1024;

/// Longest registrar name, in bytes (as in DNS).
pub const MAX_NAME_LEN: usize = 253;

/// How much of an offending input is quoted back in an error message, in chars.
const EXCERPT_CHARS: usize = 64;

/// A parsed FQMN. Values built by the parser are canonical (see the field docs); printing
/// with `Display` gives the canonical short form.
#[derive(Debug, Clone, PartialEq)]
pub enum Fqmn {
    /// `I:<method>[:<args-json>]` — a call on the IAM service.
    Iam { method: String, args: Option<Value> },
    /// `S:` / `SW:<context>:<method>[:<args-json>]` — a state (context) call.
    State {
        write: bool,
        /// `0x` followed by lower-case hex digits (at least one).
        context: String,
        method: String,
        args: Option<Value>,
    },
    /// `A:` / `AW:<version-req>:<context>:<method>[:<args-json>]` — a state view / call
    /// that runs only when the context's app version meets the requirement.
    Assembly {
        write: bool,
        /// As written, trimmed (e.g. `~4.1.3`, `>=1.2, <2`).
        version_req: String,
        /// `0x` followed by lower-case hex digits (at least one).
        context: String,
        method: String,
        args: Option<Value>,
    },
    /// `S:<context>` — a context itself: its root, heads and how many transactions it
    /// holds (CMesh registers names for bare contracts like `0xS:0x001`).
    Context {
        /// `0x` followed by lower-case hex digits (at least one).
        context: String,
    },
    /// `R:<name>[:<args-json>]` — resolve a registrar name and dispatch its target with
    /// `args`.
    Resolve {
        /// Lower-case, at least two labels of `[a-z0-9-]`, at most 253 bytes.
        name: String,
        args: Option<Value>,
    },
    /// `R:` / `RW:<method>[:<params-json>]` — a call on the registrar itself
    /// (`resolve`, `list`, `register`, `transfer`, `release`, ...).
    RegistrarCall {
        write: bool,
        method: String,
        params: Option<Value>,
    },
    /// `E:<topic>[:<verb>]` — read a topic's recent events.
    Events {
        topic: EventTopic,
        /// A verb after the topic, as CMesh's events miner sends (`:read`), lower-case.
        /// `read`, the only one served, is the default and canonically left out, so it is
        /// `None`; any other verb is kept (and answered 404).
        verb: Option<String>,
    },
    /// `EW:<topic>:<payload>` — publish an application event, or
    /// `EW:S:<context>:<event>:<payload>` — publish on a context's topic.
    Publish { topic: PublishTopic, payload: Payload },
    /// `C:` / `CW:<body>` — consensus (opaque text, not served yet).
    Consensus {
        write: bool,
        /// Non-empty, without leading/trailing ASCII whitespace.
        body: String,
    },
    /// `P:<method>[:<args-json>]` — a call on the router itself (`ping`, `info`, ...).
    Router { method: String, args: Option<Value> },
}

/// What an `E:` FQMN subscribes to.
#[derive(Debug, Clone, PartialEq)]
pub enum EventTopic {
    /// `E:chat.room1` — an application topic: dot-separated, non-empty tokens of
    /// `[A-Za-z0-9_-]`.
    App(String),
    /// `E:R:<name>[:<kind>]` — lifecycle events of a registrar name. `name` is canonical
    /// (lower-case), `kind` is lower-case `[a-z_]+` (e.g. `transferred`).
    Name { name: String, kind: Option<String> },
    /// `E:R:<kind>` — registrar events of one kind, of every name (CMesh's
    /// `0Ex:0Rx:Registered`). `kind` is lower-case `[a-z_]+`.
    Names { kind: String },
    /// `E:S:<context>[:<event>]` — events of a context. `context` is canonical
    /// (`0x` + lower-case hex), `event` is `[A-Za-z0-9_-]+` as written.
    Context { context: String, event: Option<String> },
}

/// Where an `EW:` FQMN publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishTopic {
    /// `EW:chat.room1:<payload>` — an application topic (syntax as `EventTopic::App`).
    App(String),
    /// `EW:S:<context>:<event>:<payload>` — a context's event. `context` is canonical
    /// (`0x` + lower-case hex), `event` is `[A-Za-z0-9_-]+` as written.
    Context { context: String, event: String },
}

/// What an `EW:` FQMN publishes: JSON, or text kept exactly as the client wrote it.
///
/// CMesh's events miner publishes two integers joined by a dot (`EW:events.mined:12345.67890`).
/// That is a JSON number, but one JSON would print back as `12345.6789`, losing what the
/// sender wrote; such payloads, and any that are not JSON at all, are text.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A JSON value whose compact form says what the sender said.
    Json(Value),
    /// Anything else, exactly as sent.
    Text(String),
}

impl Payload {
    /// The payload as text after the last fixed segment: JSON when it is JSON that keeps
    /// its meaning when printed again, else the text itself.
    fn parse(text: &str) -> Payload {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Number(number)) if number.to_string() != trim_ascii_ws(text) => Payload::Text(text.to_owned()),
            Ok(value) => Payload::Json(value),
            Err(_) => Payload::Text(text.to_owned()),
        }
    }

    /// What an event carries as its `data`: the JSON, or the text as a JSON string.
    pub fn to_value(&self) -> Value {
        match self {
            Payload::Json(value) => value.clone(),
            Payload::Text(text) => Value::String(text.clone()),
        }
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Json(value) => write!(f, "{value}"),
            Payload::Text(text) => f.write_str(text),
        }
    }
}

/// Why a string is not a valid FQMN. The messages are meant to be shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FqmnError {
    #[error("empty FQMN: expected `<SVC>:<body>`, e.g. `I:whoami`")]
    Empty,
    #[error("FQMN too long: {len} bytes, the limit is {max} bytes", max = MAX_FQMN_LEN)]
    TooLong { len: usize },
    #[error(
        "missing service prefix in `{input}`: expected `<SVC>:` at the start, \
         where SVC is one of I, S, SW, R, RW, E, EW, A, AW, C, CW, P (e.g. `I:whoami`)"
    )]
    MissingPrefix { input: String },
    #[error(
        "unknown service prefix `{prefix}:` — expected one of I, S, SW, R, RW, E, EW, A, AW, C, CW, P \
         (or the seed spellings 0xS:, 0Sx:){hint}"
    )]
    UnknownPrefix { prefix: String, hint: String },
    #[error("empty method: expected `{usage}`")]
    EmptyMethod { usage: &'static str },
    #[error(
        "invalid method `{method}`: a method is a letter or `_` followed by letters, digits \
         or `_` (expected `{usage}`)"
    )]
    InvalidMethod { method: String, usage: &'static str },
    #[error("missing {what}: expected `{usage}`")]
    Missing { what: &'static str, usage: &'static str },
    #[error("empty context: expected hex digits, optionally prefixed by 0x (in `{usage}`)")]
    EmptyContext { usage: &'static str },
    #[error(
        "invalid context `{context}`: expected hex digits, optionally prefixed by 0x \
         (e.g. `0x03389f0e08b9f`)"
    )]
    InvalidContext { context: String },
    #[error("empty version requirement: expected `A:<version-req>:<context>:<method>[:<args-json>]`, e.g. `A:~4.1.3:0x03389f:hello_world`")]
    EmptyVersionReq,
    #[error(
        "invalid version requirement `{req}`: unexpected character `{ch}` \
         (allowed: letters, digits, space and . ~ ^ * < > = , + -)"
    )]
    InvalidVersionReq { req: String, ch: char },
    #[error("invalid name `{name}`: {reason} (e.g. `helloworld.mcom`)")]
    InvalidName { name: String, reason: &'static str },
    #[error(
        "`RW:` takes a registrar method, not a name: to register `{name}`, send \
         `RW:register:{{\"name\":\"{name}\",\"target\":\"<fqmn>\"}}`; to call it, use `R:{name}[:<args-json>]`"
    )]
    WriteToName { name: String },
    #[error(
        "empty event topic: expected `E:<topic>` (e.g. `E:chat.room1`), \
         `E:R:<name>[:<kind>]` or `E:S:<context>[:<event>]`"
    )]
    EmptyTopic,
    #[error(
        "invalid event topic `{topic}`: expected dot-separated tokens of letters, digits, `_` \
         or `-` (e.g. `chat.room1`){nested}"
    )]
    InvalidTopic {
        topic: String,
        /// Extra text naming the nested forms, where they are allowed.
        nested: &'static str,
    },
    #[error(
        "cannot subscribe to `{prefix}:`: `E:` takes an application topic, \
         `E:R:<name>[:<kind>]` or `E:S:<context>[:<event>]`"
    )]
    NotSubscribable { prefix: String },
    #[error("invalid event kind `{kind}`: expected letters or `_` (e.g. `Transferred`) in `E:R:<name>:<kind>` or `E:R:<kind>`")]
    InvalidKind { kind: String },
    #[error("invalid event verb `{verb}`: expected letters or `_` (e.g. `read`) after the topic")]
    InvalidVerb { verb: String },
    #[error("invalid context event `{event}`: expected letters, digits, `_` or `-` in `{usage}`")]
    InvalidContextEvent { event: String, usage: &'static str },
    #[error("empty {what} after the last `:` — give JSON or drop the trailing `:` (expected `{usage}`)")]
    EmptyJson { what: &'static str, usage: &'static str },
    #[error("{what} must be JSON: {error}")]
    InvalidJson { what: &'static str, error: String },
    #[error("empty consensus body: expected `{usage}`")]
    EmptyBody { usage: &'static str },
}

/// The service named by a prefix (internal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Svc {
    Iam,
    State,
    Assembly,
    Registrar,
    Events,
    Consensus,
    Router,
}

const USAGE_I: &str = "I:<method>[:<args-json>]";
const USAGE_S: &str = "S:<context>:<method>[:<args-json>]";
const USAGE_SW: &str = "SW:<context>:<method>[:<args-json>]";
const USAGE_A: &str = "A:<version-req>:<context>:<method>[:<args-json>]";
const USAGE_R_NAME: &str = "R:<name>[:<args-json>]";
const USAGE_R: &str = "R:<method>[:<params-json>]";
const USAGE_RW: &str = "RW:<method>[:<params-json>]";
const USAGE_EW: &str = "EW:<topic>:<payload>";
const USAGE_EW_CONTEXT: &str = "EW:S:<context>:<event>:<payload>";
const USAGE_C: &str = "C:<body>";
const USAGE_CW: &str = "CW:<body>";
const USAGE_P: &str = "P:<method>[:<args-json>]";
const USAGE_E_NAME: &str = "E:R:<name>[:<kind>[:<verb>]]";
const USAGE_E_CONTEXT: &str = "E:S:<context>[:<event>]";

impl Svc {
    fn from_letter(letter: &str) -> Option<Svc> {
        Some(match letter {
            "I" => Svc::Iam,
            "S" => Svc::State,
            "A" => Svc::Assembly,
            "R" => Svc::Registrar,
            "E" => Svc::Events,
            "C" => Svc::Consensus,
            "P" => Svc::Router,
            _ => return None,
        })
    }

    fn has_write_form(self) -> bool {
        matches!(
            self,
            Svc::State | Svc::Assembly | Svc::Registrar | Svc::Events | Svc::Consensus
        )
    }

    fn name(self) -> &'static str {
        match self {
            Svc::Iam => "IAM",
            Svc::State => "state",
            Svc::Assembly => "assembly",
            Svc::Registrar => "registrar",
            Svc::Events => "events",
            Svc::Consensus => "consensus",
            Svc::Router => "router",
        }
    }
}

/// Splits off the write mark: `("S", true)` for `SW`, `("I", false)` for `I`.
fn split_write(token: &str) -> (&str, bool) {
    match token.strip_suffix('W') {
        Some(letter) if !letter.is_empty() => (letter, true),
        _ => (token, false),
    }
}

/// Strips the seed spellings `0x<SVC>` and `0<SVC>x` down to `<SVC>`.
fn strip_seed_spelling(token: &str) -> &str {
    if let Some(rest) = token.strip_prefix("0x") {
        return rest;
    }
    if let Some(mid) = token.strip_prefix('0').and_then(|t| t.strip_suffix('x')) {
        return mid;
    }
    token
}

/// Parses a prefix token (the text before the first `:`) in any of the three spellings.
fn parse_prefix(token: &str) -> Option<(Svc, bool)> {
    let (letter, write) = split_write(strip_seed_spelling(token));
    let svc = Svc::from_letter(letter)?;
    if write && !svc.has_write_form() {
        return None;
    }
    Some((svc, write))
}

fn canonical_prefix(svc: Svc, write: bool) -> &'static str {
    match (svc, write) {
        (Svc::Iam, _) => "I",
        (Svc::State, false) => "S",
        (Svc::State, true) => "SW",
        (Svc::Assembly, false) => "A",
        (Svc::Assembly, true) => "AW",
        (Svc::Registrar, false) => "R",
        (Svc::Registrar, true) => "RW",
        (Svc::Events, false) => "E",
        (Svc::Events, true) => "EW",
        (Svc::Consensus, false) => "C",
        (Svc::Consensus, true) => "CW",
        (Svc::Router, _) => "P",
    }
}

/// Explains why a token is not a prefix, when we can guess what was meant.
fn prefix_hint(token: &str) -> String {
    let inner = strip_seed_spelling(token);
    if let (letter, true) = split_write(inner) {
        if let Some(svc) = Svc::from_letter(letter) {
            if !svc.has_write_form() {
                return format!("; the {} service has no write form, use `{letter}:`", svc.name());
            }
        }
    }
    let upper = inner.to_ascii_uppercase();
    if upper != inner {
        if let Some((svc, write)) = parse_prefix(&upper) {
            return format!(
                "; service letters are upper-case: did you mean `{}:`?",
                canonical_prefix(svc, write)
            );
        }
    }
    String::new()
}

/// The first [`EXCERPT_CHARS`] chars of `s`, with `…` when cut.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or_default()),
        None => s.to_owned(),
    }
}

fn trim_ascii_ws(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}

fn parse_method(method: &str, usage: &'static str) -> Result<String, FqmnError> {
    let mut chars = method.chars();
    let Some(first) = chars.next() else {
        return Err(FqmnError::EmptyMethod { usage });
    };
    let ok = (first.is_ascii_alphabetic() || first == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(method.to_owned())
    } else {
        Err(FqmnError::InvalidMethod {
            method: excerpt(method),
            usage,
        })
    }
}

/// Hex digits with an optional `0x`/`0X`; canonical form `0x` + lower-case hex.
fn parse_context(context: &str, usage: &'static str) -> Result<String, FqmnError> {
    let digits = context
        .strip_prefix("0x")
        .or_else(|| context.strip_prefix("0X"))
        .unwrap_or(context);
    if digits.is_empty() {
        return Err(FqmnError::EmptyContext { usage });
    }
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FqmnError::InvalidContext {
            context: excerpt(context),
        });
    }
    Ok(format!("0x{}", digits.to_ascii_lowercase()))
}

fn parse_version_req(req: &str) -> Result<String, FqmnError> {
    let req = trim_ascii_ws(req);
    if req.is_empty() {
        return Err(FqmnError::EmptyVersionReq);
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".~^*<>=, +-".contains(c);
    match req.chars().find(|&c| !allowed(c)) {
        Some(ch) => Err(FqmnError::InvalidVersionReq { req: excerpt(req), ch }),
        None => Ok(req.to_owned()),
    }
}

/// A registrar name: labels of `[A-Za-z0-9-]` separated by `.`, at least two labels,
/// at most [`MAX_NAME_LEN`] bytes. Canonical form is lower-case.
fn parse_name(name: &str) -> Result<String, FqmnError> {
    let invalid = |reason| FqmnError::InvalidName {
        name: excerpt(name),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("a name cannot be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("a name is at most 253 characters long"));
    }
    if !name.contains('.') {
        return Err(invalid("a name has at least two labels separated by `.`"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid(
                "a name cannot have an empty label (`..` or a leading or trailing `.`)",
            ));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(invalid("labels may only contain letters, digits and `-`"));
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// An application topic: dot-separated, non-empty tokens of `[A-Za-z0-9_-]`.
fn parse_app_topic(topic: &str, nested: &'static str) -> Result<String, FqmnError> {
    if topic.is_empty() {
        return Err(FqmnError::EmptyTopic);
    }
    let token_ok = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if topic.split('.').all(token_ok) {
        Ok(topic.to_owned())
    } else {
        Err(FqmnError::InvalidTopic {
            topic: excerpt(topic),
            nested,
        })
    }
}

/// Optional JSON after the last fixed segment. `None` when there was no `:` at all.
fn parse_json_opt(rest: Option<&str>, what: &'static str, usage: &'static str) -> Result<Option<Value>, FqmnError> {
    rest.map(|text| parse_json(text, what, usage)).transpose()
}

fn parse_json(text: &str, what: &'static str, usage: &'static str) -> Result<Value, FqmnError> {
    if trim_ascii_ws(text).is_empty() {
        return Err(FqmnError::EmptyJson { what, usage });
    }
    serde_json::from_str(text).map_err(|e| FqmnError::InvalidJson {
        what,
        error: e.to_string(),
    })
}

/// Splits off the next `:`-separated segment: `(segment, rest-after-the-colon)`.
fn next_segment(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((head, rest)) => (head, Some(rest)),
        None => (s, None),
    }
}

fn parse_body(svc: Svc, write: bool, body: &str) -> Result<Fqmn, FqmnError> {
    match svc {
        Svc::Iam => {
            let (method, rest) = next_segment(body);
            Ok(Fqmn::Iam {
                method: parse_method(method, USAGE_I)?,
                args: parse_json_opt(rest, "args", USAGE_I)?,
            })
        }
        Svc::State => {
            let usage = if write { USAGE_SW } else { USAGE_S };
            let (context, rest) = next_segment(body);
            let context = parse_context(context, usage)?;
            if rest.is_none() && !write {
                return Ok(Fqmn::Context { context });
            }
            let rest = rest.ok_or(FqmnError::Missing {
                what: "method after the context",
                usage,
            })?;
            let (method, rest) = next_segment(rest);
            Ok(Fqmn::State {
                write,
                context,
                method: parse_method(method, usage)?,
                args: parse_json_opt(rest, "args", usage)?,
            })
        }
        Svc::Assembly => {
            let (req, rest) = next_segment(body);
            let version_req = parse_version_req(req)?;
            let rest = rest.ok_or(FqmnError::Missing {
                what: "context after the version requirement",
                usage: USAGE_A,
            })?;
            let (context, rest) = next_segment(rest);
            let context = parse_context(context, USAGE_A)?;
            let rest = rest.ok_or(FqmnError::Missing {
                what: "method after the context",
                usage: USAGE_A,
            })?;
            let (method, rest) = next_segment(rest);
            Ok(Fqmn::Assembly {
                write,
                version_req,
                context,
                method: parse_method(method, USAGE_A)?,
                args: parse_json_opt(rest, "args", USAGE_A)?,
            })
        }
        Svc::Registrar => {
            let (first, rest) = next_segment(body);
            if first.contains('.') {
                if write {
                    return Err(FqmnError::WriteToName { name: excerpt(first) });
                }
                Ok(Fqmn::Resolve {
                    name: parse_name(first)?,
                    args: parse_json_opt(rest, "args", USAGE_R_NAME)?,
                })
            } else {
                let usage = if write { USAGE_RW } else { USAGE_R };
                Ok(Fqmn::RegistrarCall {
                    write,
                    method: parse_method(first, usage)?,
                    params: parse_json_opt(rest, "params", usage)?,
                })
            }
        }
        Svc::Events if write => {
            let (topic, rest) = next_segment(body);
            if let (Some((Svc::State, false)), Some(rest)) = (parse_prefix(topic), rest) {
                return parse_context_publish(rest);
            }
            let topic = parse_app_topic(topic, "")?;
            let rest = rest.ok_or(FqmnError::Missing {
                what: "payload after the topic",
                usage: USAGE_EW,
            })?;
            Ok(Fqmn::Publish {
                topic: PublishTopic::App(topic),
                payload: parse_payload(rest, USAGE_EW)?,
            })
        }
        Svc::Events => {
            let (topic, verb) = parse_event_topic(body)?;
            Ok(Fqmn::Events { topic, verb })
        }
        Svc::Consensus => {
            let usage = if write { USAGE_CW } else { USAGE_C };
            let body = trim_ascii_ws(body);
            if body.is_empty() {
                return Err(FqmnError::EmptyBody { usage });
            }
            Ok(Fqmn::Consensus {
                write,
                body: body.to_owned(),
            })
        }
        Svc::Router => {
            let (method, rest) = next_segment(body);
            Ok(Fqmn::Router {
                method: parse_method(method, USAGE_P)?,
                args: parse_json_opt(rest, "args", USAGE_P)?,
            })
        }
    }
}

/// The body of `EW:S:` after `S:`: `<context>:<event>:<payload>`.
fn parse_context_publish(body: &str) -> Result<Fqmn, FqmnError> {
    let (context, rest) = next_segment(body);
    let context = parse_context(context, USAGE_EW_CONTEXT)?;
    let missing_event = FqmnError::Missing {
        what: "event after the context",
        usage: USAGE_EW_CONTEXT,
    };
    let (event, rest) = next_segment(rest.ok_or(missing_event)?);
    let event = parse_context_event(event, "event after the context", USAGE_EW_CONTEXT)?;
    let rest = rest.ok_or(FqmnError::Missing {
        what: "payload after the event",
        usage: USAGE_EW_CONTEXT,
    })?;
    Ok(Fqmn::Publish {
        topic: PublishTopic::Context { context, event },
        payload: parse_payload(rest, USAGE_EW_CONTEXT)?,
    })
}

/// An `EW:` payload: anything but nothing.
fn parse_payload(text: &str, usage: &'static str) -> Result<Payload, FqmnError> {
    if trim_ascii_ws(text).is_empty() {
        return Err(FqmnError::EmptyJson { what: "payload", usage });
    }
    Ok(Payload::parse(text))
}

/// A registrar event kind: letters or `_`, lower-cased.
fn parse_kind(kind: &str) -> Result<String, FqmnError> {
    if kind.is_empty() {
        Err(FqmnError::Missing {
            what: "event kind after the last `:`",
            usage: USAGE_E_NAME,
        })
    } else if kind.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_') {
        Ok(kind.to_ascii_lowercase())
    } else {
        Err(FqmnError::InvalidKind { kind: excerpt(kind) })
    }
}

/// The verb after an `E:` topic, lower-cased; `read`, the default, is `None`.
fn parse_verb(verb: Option<&str>) -> Result<Option<String>, FqmnError> {
    let Some(verb) = verb else { return Ok(None) };
    if verb.is_empty() || !verb.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_') {
        return Err(FqmnError::InvalidVerb { verb: excerpt(verb) });
    }
    let verb = verb.to_ascii_lowercase();
    Ok((verb != READ_VERB).then_some(verb))
}

/// The events verb `E:` serves: read the topic's recent events.
pub const READ_VERB: &str = "read";

/// A context event name: `[A-Za-z0-9_-]+`, kept as written.
fn parse_context_event(event: &str, what: &'static str, usage: &'static str) -> Result<String, FqmnError> {
    if event.is_empty() {
        Err(FqmnError::Missing { what, usage })
    } else if cmesh_common::event_name::is_context_event_name(event) {
        Ok(event.to_owned())
    } else {
        Err(FqmnError::InvalidContextEvent {
            event: excerpt(event),
            usage,
        })
    }
}

fn parse_event_topic(body: &str) -> Result<(EventTopic, Option<String>), FqmnError> {
    const NESTED: &str = ", `E:R:<name>[:<kind>]` or `E:S:<context>[:<event>]`";
    let (inner, rest) = next_segment(body);
    let Some(rest) = rest else {
        return Ok((EventTopic::App(parse_app_topic(body, NESTED)?), None));
    };
    match parse_prefix(inner) {
        Some((Svc::Registrar, false)) => {
            let (first, rest) = next_segment(rest);
            if !first.contains('.') {
                // `E:R:<kind>[:<verb>]`: one kind, every name.
                let kind = parse_kind(first).map_err(|_| FqmnError::InvalidName {
                    name: excerpt(first),
                    reason: "`E:R:` takes a registrar name with at least two labels separated by `.`, \
                             or an event kind of letters and `_`",
                })?;
                return Ok((EventTopic::Names { kind }, parse_verb(rest)?));
            }
            let name = parse_name(first)?;
            let (kind, verb) = match rest.map(next_segment) {
                None => (None, None),
                Some((kind, verb)) => (Some(parse_kind(kind)?), verb),
            };
            Ok((EventTopic::Name { name, kind }, parse_verb(verb)?))
        }
        Some((Svc::State, false)) => {
            let (context, rest) = next_segment(rest);
            let context = parse_context(context, USAGE_E_CONTEXT)?;
            let (event, verb) = match rest.map(next_segment) {
                None => (None, None),
                Some((event, verb)) => (
                    Some(parse_context_event(
                        event,
                        "context event after the last `:`",
                        USAGE_E_CONTEXT,
                    )?),
                    verb,
                ),
            };
            Ok((EventTopic::Context { context, event }, parse_verb(verb)?))
        }
        Some(_) => Err(FqmnError::NotSubscribable { prefix: excerpt(inner) }),
        // `E:<topic>:<verb>`
        None => {
            let topic = parse_app_topic(inner, NESTED)?;
            Ok((EventTopic::App(topic), parse_verb(Some(rest))?))
        }
    }
}

impl FromStr for Fqmn {
    type Err = FqmnError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.len() > MAX_FQMN_LEN {
            return Err(FqmnError::TooLong { len: input.len() });
        }
        let s = trim_ascii_ws(input);
        if s.is_empty() {
            return Err(FqmnError::Empty);
        }
        let Some((token, body)) = s.split_once(':') else {
            return Err(match prefix_hint_for_bare(s) {
                Some(err) => err,
                None => FqmnError::MissingPrefix { input: excerpt(s) },
            });
        };
        let (svc, write) = parse_prefix(token).ok_or_else(|| FqmnError::UnknownPrefix {
            prefix: excerpt(token),
            hint: prefix_hint(token),
        })?;
        parse_body(svc, write, body)
    }
}

/// `I` or `0xS` without a `:` — a known prefix with nothing after it.
fn prefix_hint_for_bare(s: &str) -> Option<FqmnError> {
    let (svc, write) = parse_prefix(s)?;
    let usage = match (svc, write) {
        (Svc::Iam, _) => USAGE_I,
        (Svc::State, false) => USAGE_S,
        (Svc::State, true) => USAGE_SW,
        (Svc::Assembly, _) => USAGE_A,
        (Svc::Registrar, false) => "R:<name>[:<args-json>]` or `R:<method>[:<params-json>]",
        (Svc::Registrar, true) => USAGE_RW,
        (Svc::Events, false) => "E:<topic>",
        (Svc::Events, true) => USAGE_EW,
        (Svc::Consensus, false) => USAGE_C,
        (Svc::Consensus, true) => USAGE_CW,
        (Svc::Router, _) => USAGE_P,
    };
    Some(FqmnError::Missing {
        what: "`:` and body after the service prefix",
        usage,
    })
}

fn write_args(f: &mut fmt::Formatter<'_>, args: &Option<Value>) -> fmt::Result {
    match args {
        // `Value`'s Display is compact JSON, the same text as `serde_json::to_string`.
        Some(v) => write!(f, ":{v}"),
        None => Ok(()),
    }
}

impl fmt::Display for EventTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventTopic::App(topic) => f.write_str(topic),
            EventTopic::Name { name, kind } => {
                write!(f, "R:{name}")?;
                match kind {
                    Some(kind) => write!(f, ":{kind}"),
                    None => Ok(()),
                }
            }
            EventTopic::Names { kind } => write!(f, "R:{kind}"),
            EventTopic::Context { context, event } => {
                write!(f, "S:{context}")?;
                match event {
                    Some(event) => write!(f, ":{event}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl fmt::Display for PublishTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishTopic::App(topic) => f.write_str(topic),
            PublishTopic::Context { context, event } => write!(f, "S:{context}:{event}"),
        }
    }
}

impl fmt::Display for Fqmn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = self.service_letter();
        match self {
            Fqmn::Iam { method, args } | Fqmn::Router { method, args } => {
                write!(f, "{prefix}:{method}")?;
                write_args(f, args)
            }
            Fqmn::State {
                context, method, args, ..
            } => {
                write!(f, "{prefix}:{context}:{method}")?;
                write_args(f, args)
            }
            Fqmn::Assembly {
                version_req,
                context,
                method,
                args,
                ..
            } => {
                write!(f, "{prefix}:{version_req}:{context}:{method}")?;
                write_args(f, args)
            }
            Fqmn::Context { context } => write!(f, "{prefix}:{context}"),
            Fqmn::Resolve { name, args } => {
                write!(f, "{prefix}:{name}")?;
                write_args(f, args)
            }
            Fqmn::RegistrarCall { method, params, .. } => {
                write!(f, "{prefix}:{method}")?;
                write_args(f, params)
            }
            Fqmn::Events { topic, verb } => {
                write!(f, "{prefix}:{topic}")?;
                match verb {
                    Some(verb) => write!(f, ":{verb}"),
                    None => Ok(()),
                }
            }
            Fqmn::Publish { topic, payload } => write!(f, "{prefix}:{topic}:{payload}"),
            Fqmn::Consensus { body, .. } => write!(f, "{prefix}:{body}"),
        }
    }
}

impl Fqmn {
    /// The canonical service prefix without the `:`: one of `I`, `S`, `SW`, `A`, `R`,
    /// `RW`, `E`, `EW`, `C`, `CW`, `P`.
    pub fn service_letter(&self) -> &'static str {
        let (svc, write) = match self {
            Fqmn::Iam { .. } => (Svc::Iam, false),
            Fqmn::State { write, .. } => (Svc::State, *write),
            Fqmn::Context { .. } => (Svc::State, false),
            Fqmn::Assembly { write, .. } => (Svc::Assembly, *write),
            Fqmn::Resolve { .. } => (Svc::Registrar, false),
            Fqmn::RegistrarCall { write, .. } => (Svc::Registrar, *write),
            Fqmn::Events { .. } => (Svc::Events, false),
            Fqmn::Publish { .. } => (Svc::Events, true),
            Fqmn::Consensus { write, .. } => (Svc::Consensus, *write),
            Fqmn::Router { .. } => (Svc::Router, false),
        };
        canonical_prefix(svc, write)
    }

    /// Whether the prefix carries the write mark `W` (`SW`, `RW`, `EW`, `CW`).
    ///
    /// `R:<name>` is not a write by itself: whether it writes depends on the target the
    /// name resolves to.
    pub fn is_write(&self) -> bool {
        self.service_letter().ends_with('W')
    }

    /// Gives a resolved name's target the caller's arguments: `Some(args)` replaces the
    /// target's `args` (a registrar call's `params`, a publish's `payload`); `None` keeps
    /// the target's own. `S:<context>`, `E:` and `C:`/`CW:` take no arguments and are
    /// returned unchanged.
    pub fn with_args(mut self, new_args: Option<Value>) -> Fqmn {
        let Some(new_args) = new_args else {
            return self;
        };
        match &mut self {
            Fqmn::Iam { args, .. }
            | Fqmn::State { args, .. }
            | Fqmn::Assembly { args, .. }
            | Fqmn::Resolve { args, .. }
            | Fqmn::Router { args, .. } => *args = Some(new_args),
            Fqmn::RegistrarCall { params, .. } => *params = Some(new_args),
            Fqmn::Publish { payload, .. } => *payload = Payload::Json(new_args),
            Fqmn::Context { .. } | Fqmn::Events { .. } | Fqmn::Consensus { .. } => {}
        }
        self
    }
}

impl serde::Serialize for Fqmn {
    /// Serializes as the canonical string.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fqmn {
    /// Deserializes from a string in any accepted spelling.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
