//! Property tests for the FQMN parser and canonical printer (`src/fqmn/`).
//!
//! Run with `cargo test -p cmesh-router fqmn`.

use cmesh_router::fqmn::{EventTopic, Fqmn, Payload, PublishTopic};
use proptest::prelude::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// JSON values. Floats are dyadic fractions with few digits, so they are exact in f64.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1_000_000i32..1_000_000, 0u32..6).prop_map(|(m, e)| Value::from(f64::from(m) / f64::from(1u32 << e))),
        any::<String>().prop_map(Value::String),
        "[a-z:\"\\\\ {}\\[\\],.]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(prop_oneof!["[a-z:]{0,6}", any::<String>()], inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn args() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(json_value())
}

fn method() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,12}"
}

fn context() -> impl Strategy<Value = String> {
    "0x[0-9a-f]{1,64}"
}

fn version_req() -> impl Strategy<Value = String> {
    "[-0-9A-Za-z.~^*<>=,+]([-0-9A-Za-z.~^*<>=, +]{0,10}[-0-9A-Za-z.~^*<>=,+])?"
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9-]{1,12}", 2..5).prop_map(|labels| labels.join("."))
}

fn app_topic() -> impl Strategy<Value = String> {
    prop::collection::vec("[-A-Za-z0-9_]{1,8}", 1..4).prop_map(|tokens| tokens.join("."))
}

fn consensus_body() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z :{}0-9]{1,20}"]
        .prop_map(|s| s.trim_matches(|c: char| c.is_ascii_whitespace()).to_owned())
        .prop_filter("non-empty body", |s| !s.is_empty())
}

fn event_topic() -> impl Strategy<Value = EventTopic> {
    prop_oneof![
        app_topic().prop_map(EventTopic::App),
        (name(), prop::option::of("[a-z_]{1,12}")).prop_map(|(name, kind)| EventTopic::Name { name, kind }),
        "[a-z_]{1,12}".prop_map(|kind| EventTopic::Names { kind }),
        (context(), prop::option::of("[-A-Za-z0-9_]{1,12}"))
            .prop_map(|(context, event)| EventTopic::Context { context, event }),
    ]
}

/// A verb after an `E:` topic: lower-case, never `read` (the default, canonically left
/// out).
fn verb() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[a-z_]{1,8}".prop_filter("read is the default", |v| v != "read"))
}

/// Whether an `E:` topic can be followed by a verb: names and contexts need their kind or
/// event first, and an app topic spelled like a service prefix would be read as one.
fn takes_verb(topic: &EventTopic) -> bool {
    match topic {
        EventTopic::App(t) => {
            let inner = t
                .strip_prefix("0x")
                .or_else(|| t.strip_prefix('0').and_then(|t| t.strip_suffix('x')))
                .unwrap_or(t);
            !(1..=2).contains(&inner.len()) || !inner.bytes().all(|b| b.is_ascii_uppercase())
        }
        EventTopic::Name { kind, .. } => kind.is_some(),
        EventTopic::Names { .. } => true,
        EventTopic::Context { event, .. } => event.is_some(),
    }
}

/// `EW:` payloads: JSON, or text that is not JSON, or a number JSON would print otherwise.
fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        json_value().prop_map(Payload::Json),
        "[0-9]{1,5}\\.[0-9]{0,3}[1-9]0".prop_map(Payload::Text),
        "[a-z][a-z0-9 .:,]{0,10}[a-z0-9.]"
            .prop_filter("not JSON", |t| serde_json::from_str::<Value>(t).is_err())
            .prop_map(Payload::Text),
    ]
}

/// `EW:` topics. An app topic spelled like the state prefix (`S`, `0xS`, `0Sx`) would be
/// read as `EW:S:<context>:…`, so it cannot be published to.
fn publish_topic() -> impl Strategy<Value = PublishTopic> {
    prop_oneof![
        app_topic()
            .prop_filter("not the state prefix", |t| !matches!(t.as_str(), "S" | "0xS" | "0Sx"))
            .prop_map(PublishTopic::App),
        (context(), "[-A-Za-z0-9_]{1,12}").prop_map(|(context, event)| PublishTopic::Context { context, event }),
    ]
}

/// Canonical (parser-produced) ASTs of every variant.
fn fqmn() -> impl Strategy<Value = Fqmn> {
    prop_oneof![
        (method(), args()).prop_map(|(method, args)| Fqmn::Iam { method, args }),
        (any::<bool>(), context(), method(), args()).prop_map(|(write, context, method, args)| {
            Fqmn::State {
                write,
                context,
                method,
                args,
            }
        }),
        (any::<bool>(), version_req(), context(), method(), args()).prop_map(
            |(write, version_req, context, method, args)| Fqmn::Assembly {
                write,
                version_req,
                context,
                method,
                args,
            },
        ),
        (name(), args()).prop_map(|(name, args)| Fqmn::Resolve { name, args }),
        (any::<bool>(), method(), args())
            .prop_map(|(write, method, params)| { Fqmn::RegistrarCall { write, method, params } }),
        (event_topic(), verb()).prop_map(|(topic, verb)| {
            let verb = verb.filter(|_| takes_verb(&topic));
            Fqmn::Events { topic, verb }
        }),
        (context()).prop_map(|context| Fqmn::Context { context }),
        (publish_topic(), payload()).prop_map(|(topic, payload)| Fqmn::Publish { topic, payload }),
        (any::<bool>(), consensus_body()).prop_map(|(write, body)| Fqmn::Consensus { write, body }),
        (method(), args()).prop_map(|(method, args)| Fqmn::Router { method, args }),
    ]
}

/// Pieces of the grammar, separators and troublemakers, to be glued together at random.
const PIECES: &[&str] = &[
    "I",
    "S",
    "SW",
    "R",
    "RW",
    "E",
    "EW",
    "A",
    "C",
    "CW",
    "P",
    "W",
    "IW",
    "AW",
    "0x",
    "0X",
    "0",
    "x",
    "0xS",
    "0Sx",
    "0xSW",
    "0SWx",
    "0Rx",
    "0xR",
    "0Ex",
    "0xE",
    "0Ax",
    "0xI",
    ":",
    ":",
    ":",
    ".",
    "..",
    "0x03389f0e08b9f",
    "ABCdef",
    "hello_world",
    "whoami",
    "ping",
    "register",
    "helloWorldExample.mcom",
    "a.mcom",
    "mcom",
    "~4.1.3",
    ">=1, <2",
    "^",
    "*",
    "Transferred",
    "chat.room1",
    "member-joined",
    "[\"Dexter\"]",
    "{\"name\":\"a.mcom\"}",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    ",",
    "1",
    "-0",
    "1e5",
    "0.5",
    "null",
    "true",
    " ",
    "\t",
    "\n",
    "é",
    "ß",
    "İ",
    "\u{10FFFF}",
    "\u{0}",
    "\u{FEFF}",
    "💥",
    "ǅ",
    "K",
];

/// Prefix tokens in all spellings, valid and not.
const PREFIXES: &[&str] = &[
    "I", "S", "SW", "R", "RW", "E", "EW", "A", "C", "CW", "P", "0xS", "0Sx", "0xSW", "0SWx", "0xR", "0Rx", "0xRW",
    "0RWx", "0xE", "0Ex", "0xEW", "0Ax", "0xA", "0xI", "0Ix", "0Px", "0xC", "0CWx", "IW", "s", "0xs", "",
];

/// Segments that are valid somewhere in the grammar.
const SEGMENTS: &[&str] = &[
    "whoami",
    "ping",
    "hello_world",
    "list",
    "register",
    "0x03389f0e08b9f",
    "ABCdef",
    "0X0a",
    "helloWorldExample.mcom",
    "a.mcom",
    "~4.1.3",
    ">=1, <2",
    "Transferred",
    "member-joined",
    "chat.room1",
    "chat",
    "R",
    "S",
    "0Rx",
    "0xS",
    "E",
    "[\"Dexter\"]",
    "{\"name\":\"a.mcom\"}",
    "{\"a\":\"b:c\"}",
    "1",
    "null",
    " [1, 2] ",
    "",
    "é",
    "a b",
];

/// Arbitrary glue of the grammar's pieces, separators and odd unicode.
fn glued_pieces() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(PIECES).prop_map(str::to_owned),
            1 => any::<String>(),
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

/// `<prefix>:<segment>:<segment>...`, mostly made of valid parts, so many are accepted.
fn shaped_pieces() -> impl Strategy<Value = String> {
    (
        prop::sample::select(PREFIXES),
        prop::collection::vec(prop::sample::select(SEGMENTS), 0..5),
        prop::sample::select(&[" ", "", "\n"][..]),
    )
        .prop_map(|(prefix, segments, pad)| format!("{pad}{prefix}:{}{pad}", segments.join(":")))
}

fn pieces() -> impl Strategy<Value = String> {
    prop_oneof![glued_pieces(), shaped_pieces()]
}

/// Choices for spelling a canonical AST in a non-canonical but equivalent way.
#[derive(Debug, Clone)]
struct Respell {
    prefix_style: u8,
    inner_prefix_style: u8,
    context_style: u8,
    upper_hex: bool,
    case_bits: u64,
    upper_kind: bool,
    pretty_json: bool,
    pad: (usize, usize),
}

fn respell() -> impl Strategy<Value = Respell> {
    (
        (0u8..3, 0u8..3, 0u8..3, any::<bool>()),
        (any::<u64>(), any::<bool>(), any::<bool>(), (0usize..3, 0usize..3)),
    )
        .prop_map(
            |(
                (prefix_style, inner_prefix_style, context_style, upper_hex),
                (case_bits, upper_kind, pretty_json, pad),
            )| Respell {
                prefix_style,
                inner_prefix_style,
                context_style,
                upper_hex,
                case_bits,
                upper_kind,
                pretty_json,
                pad,
            },
        )
}

fn prefix(letters: &str, style: u8) -> String {
    match style {
        0 => format!("{letters}:"),
        1 => format!("0x{letters}:"),
        _ => format!("0{letters}x:"),
    }
}

impl Respell {
    fn context(&self, canonical: &str) -> String {
        let digits = canonical.strip_prefix("0x").unwrap_or(canonical);
        let digits = if self.upper_hex {
            digits.to_ascii_uppercase()
        } else {
            digits.to_owned()
        };
        match self.context_style {
            0 => format!("0x{digits}"),
            1 => format!("0X{digits}"),
            _ => digits,
        }
    }

    fn name(&self, canonical: &str) -> String {
        canonical
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if self.case_bits >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }

    fn json(&self, v: &Value) -> String {
        if self.pretty_json {
            serde_json::to_string_pretty(v).unwrap()
        } else {
            v.to_string()
        }
    }

    fn args(&self, args: &Option<Value>) -> String {
        args.as_ref().map(|v| format!(":{}", self.json(v))).unwrap_or_default()
    }

    /// Spells `f` with seed prefixes, mixed-case names, upper-case hex, pretty JSON and
    /// surrounding whitespace, all of which must parse back to `f`.
    fn spell(&self, f: &Fqmn) -> String {
        let p = prefix(f.service_letter(), self.prefix_style);
        let body = match f {
            Fqmn::Iam { method, args } | Fqmn::Router { method, args } => {
                format!("{method}{}", self.args(args))
            }
            Fqmn::State {
                context, method, args, ..
            } => format!("{}:{method}{}", self.context(context), self.args(args)),
            Fqmn::Assembly {
                version_req,
                context,
                method,
                args,
                ..
            } => format!(" {version_req} :{}:{method}{}", self.context(context), self.args(args)),
            Fqmn::Resolve { name, args } => format!("{}{}", self.name(name), self.args(args)),
            Fqmn::RegistrarCall { method, params, .. } => {
                format!("{method}{}", self.args(params))
            }
            Fqmn::Context { context } => self.context(context),
            Fqmn::Events { topic, verb } => {
                let verb = verb.as_ref().map(|v| format!(":{}", self.name(v))).unwrap_or_default();
                let topic = self.topic(topic);
                format!("{topic}{verb}")
            }
            Fqmn::Publish { topic, payload } => match payload {
                Payload::Json(json) => format!("{topic}:{}", self.json(json)),
                Payload::Text(text) => format!("{topic}:{text}"),
            },
            Fqmn::Consensus { body, .. } => format!(" {body}\t"),
        };
        format!("{}{p}{body}{}", " ".repeat(self.pad.0), "\n".repeat(self.pad.1))
    }

    fn topic(&self, topic: &EventTopic) -> String {
        match topic {
            EventTopic::App(t) => t.clone(),
            EventTopic::Name { name, kind } => {
                let kind = kind
                    .as_ref()
                    .map(|k| {
                        if self.upper_kind {
                            format!(":{}", k.to_ascii_uppercase())
                        } else {
                            format!(":{k}")
                        }
                    })
                    .unwrap_or_default();
                format!("{}{}{kind}", prefix("R", self.inner_prefix_style), self.name(name))
            }
            EventTopic::Names { kind } => {
                let kind = if self.upper_kind {
                    kind.to_ascii_uppercase()
                } else {
                    kind.clone()
                };
                format!("{}{kind}", prefix("R", self.inner_prefix_style))
            }
            EventTopic::Context { context, event } => {
                let event = event.as_ref().map(|e| format!(":{e}")).unwrap_or_default();
                format!(
                    "{}{}{event}",
                    prefix("S", self.inner_prefix_style),
                    self.context(context)
                )
            }
        }
    }
}

/// Deletes, inserts or replaces one char of `s` at a char boundary.
fn mutate(s: &str, op: u8, at: usize, piece: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let at = if chars.is_empty() { 0 } else { at % chars.len() };
    let (head, tail) = chars.split_at(at);
    let head: String = head.iter().collect();
    let tail: String = tail.iter().collect();
    match op {
        0 => format!("{head}{}", tail.chars().skip(1).collect::<String>()),
        1 => format!("{head}{piece}{tail}"),
        _ => format!("{head}{piece}{}", tail.chars().skip(1).collect::<String>()),
    }
}

/// For an accepted input: its canonical form parses to the same AST, and printing that
/// again gives the same canonical form.
fn assert_canonical_reparses(input: &str) -> Result<(), TestCaseError> {
    if let Ok(ast) = input.parse::<Fqmn>() {
        let canonical = ast.to_string();
        let reparsed = canonical.parse::<Fqmn>();
        prop_assert_eq!(
            reparsed.as_ref(),
            Ok(&ast),
            "input {:?}, canonical {:?}",
            input,
            canonical
        );
        if let Ok(reparsed) = reparsed {
            prop_assert_eq!(reparsed.to_string(), canonical);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// (1) Any string, including arbitrary unicode, parses or errors without panicking.
    #[test]
    fn fqmn_arbitrary_strings_never_panic(s in any::<String>()) {
        let _ = s.parse::<Fqmn>();
    }

    /// (1) Strings glued from the grammar's pieces, separators and odd unicode never
    /// panic; when accepted, their canonical form re-parses to the same AST (3).
    #[test]
    fn fqmn_grammar_pieces_never_panic(s in pieces()) {
        assert_canonical_reparses(&s)?;
    }

    /// (2) print → parse == AST, and print(parse(print(x))) == print(x).
    #[test]
    fn fqmn_print_parse_round_trips(ast in fqmn()) {
        let printed = ast.to_string();
        let parsed = printed.parse::<Fqmn>();
        prop_assert_eq!(parsed.as_ref(), Ok(&ast), "printed {:?}", printed);
        if let Ok(parsed) = parsed {
            prop_assert_eq!(parsed.to_string(), printed);
        }
    }

    /// (2) Any accepted spelling of an AST (seed prefixes, mixed case, 0X, pretty JSON,
    /// whitespace) parses to that AST and prints its canonical form.
    #[test]
    fn fqmn_respelled_parses_to_same_ast(ast in fqmn(), how in respell()) {
        let spelled = how.spell(&ast);
        let parsed = spelled.parse::<Fqmn>();
        prop_assert_eq!(parsed.as_ref(), Ok(&ast), "spelled {:?}", spelled);
        if let Ok(parsed) = parsed {
            prop_assert_eq!(parsed.to_string(), ast.to_string());
        }
    }

    /// (3) Near-valid inputs (one-char mutations of valid spellings): never panic, and
    /// each accepted one's canonical form re-parses to the same AST.
    #[test]
    fn fqmn_accepted_inputs_canonical_form_reparses(
        ast in fqmn(),
        how in respell(),
        op in 0u8..3,
        at in any::<usize>(),
        piece in prop_oneof![prop::sample::select(PIECES).prop_map(str::to_owned), any::<char>().prop_map(String::from)],
    ) {
        let input = mutate(&how.spell(&ast), op, at, &piece);
        assert_canonical_reparses(&input)?;
    }
}
