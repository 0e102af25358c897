use super::*;
use serde_json::json;

fn parse(s: &str) -> Fqmn {
    match s.parse::<Fqmn>() {
        Ok(f) => f,
        Err(e) => panic!("`{s}` should parse, got: {e}"),
    }
}

fn err(s: &str) -> String {
    match s.parse::<Fqmn>() {
        Ok(f) => panic!("`{s}` should not parse, got {f:?}"),
        Err(e) => e.to_string(),
    }
}

/// Parses `input`, checks the AST and the canonical form, and that the canonical form
/// parses to the same AST.
fn check(input: &str, ast: Fqmn, canonical: &str) {
    let parsed = parse(input);
    assert_eq!(parsed, ast, "AST of `{input}`");
    assert_eq!(parsed.to_string(), canonical, "canonical form of `{input}`");
    assert_eq!(parse(canonical), ast, "AST of canonical `{canonical}`");
    assert_eq!(parse(canonical).to_string(), canonical);
}

#[test]
fn seed_state_call() {
    check(
        r#"0Sx:0x03389f0e08b9f:hello_world:["Dexter"]"#,
        Fqmn::State {
            write: false,
            context: "0x03389f0e08b9f".into(),
            method: "hello_world".into(),
            args: Some(json!(["Dexter"])),
        },
        r#"S:0x03389f0e08b9f:hello_world:["Dexter"]"#,
    );
}

#[test]
fn seed_resolve_name_lowercases() {
    check(
        r#"0Rx:helloWorldExample.mcom:["Dexter"]"#,
        Fqmn::Resolve {
            name: "helloworldexample.mcom".into(),
            args: Some(json!(["Dexter"])),
        },
        r#"R:helloworldexample.mcom:["Dexter"]"#,
    );
}

#[test]
fn seed_name_events() {
    check(
        "0Ex:0Rx:helloworld.mcom:Transferred",
        Fqmn::Events {
            topic: EventTopic::Name {
                name: "helloworld.mcom".into(),
                kind: Some("transferred".into()),
            },
            verb: None,
        },
        "E:R:helloworld.mcom:transferred",
    );
}

#[test]
fn seed_assembly() {
    check(
        r#"0Ax:~4.1.3:0x03389f0e08b9f:hello_world:["Dexter"]"#,
        Fqmn::Assembly {
            write: false,
            version_req: "~4.1.3".into(),
            context: "0x03389f0e08b9f".into(),
            method: "hello_world".into(),
            args: Some(json!(["Dexter"])),
        },
        r#"A:~4.1.3:0x03389f0e08b9f:hello_world:["Dexter"]"#,
    );
}

#[test]
fn seed_0x_spellings() {
    check(
        "0xS:0x03389f0e08b9f:get",
        Fqmn::State {
            write: false,
            context: "0x03389f0e08b9f".into(),
            method: "get".into(),
            args: None,
        },
        "S:0x03389f0e08b9f:get",
    );
    check(
        r#"0xSW:0x03389F0E08B9F:set:{"key":"k","value":1}"#,
        Fqmn::State {
            write: true,
            context: "0x03389f0e08b9f".into(),
            method: "set".into(),
            args: Some(json!({"key": "k", "value": 1})),
        },
        r#"SW:0x03389f0e08b9f:set:{"key":"k","value":1}"#,
    );
    check(
        "0xR:helloWorld.mcom",
        Fqmn::Resolve {
            name: "helloworld.mcom".into(),
            args: None,
        },
        "R:helloworld.mcom",
    );
    check(
        r#"0xR:resolve:{"name":"helloworld.mcom"}"#,
        Fqmn::RegistrarCall {
            write: false,
            method: "resolve".into(),
            params: Some(json!({"name": "helloworld.mcom"})),
        },
        r#"R:resolve:{"name":"helloworld.mcom"}"#,
    );
    check(
        r#"0xRW:register:{"name":"helloworld.mcom","target":"S:0xab:hello_world"}"#,
        Fqmn::RegistrarCall {
            write: true,
            method: "register".into(),
            params: Some(json!({"name": "helloworld.mcom", "target": "S:0xab:hello_world"})),
        },
        r#"RW:register:{"name":"helloworld.mcom","target":"S:0xab:hello_world"}"#,
    );
    check(
        "0xI:whoami",
        Fqmn::Iam {
            method: "whoami".into(),
            args: None,
        },
        "I:whoami",
    );
    check(
        "0xE:chat.room1",
        Fqmn::Events {
            topic: EventTopic::App("chat.room1".into()),
            verb: None,
        },
        "E:chat.room1",
    );
    check(
        r#"0xEW:chat.room1:{"text":"hi: there"}"#,
        Fqmn::Publish {
            topic: PublishTopic::App("chat.room1".into()),
            payload: Payload::Json(json!({"text": "hi: there"})),
        },
        r#"EW:chat.room1:{"text":"hi: there"}"#,
    );
}

/// Every FQMN that CMesh's own code sends (its router, dispatcher, events miner and
/// their examples) parses; what each means is in docs/FQMN.md.
#[test]
fn cmesh_forms() {
    check(
        "0xS:0x001:blah_blah",
        Fqmn::State {
            write: false,
            context: "0x001".into(),
            method: "blah_blah".into(),
            args: None,
        },
        "S:0x001:blah_blah",
    );
    check(
        "0xS:0x001",
        Fqmn::Context {
            context: "0x001".into(),
        },
        "S:0x001",
    );
    check(
        "0xE:events.state.contracts.0x001.blah_blah:read",
        Fqmn::Events {
            topic: EventTopic::App("events.state.contracts.0x001.blah_blah".into()),
            verb: None,
        },
        "E:events.state.contracts.0x001.blah_blah",
    );
    check(
        "0xE:ch1:stuff",
        Fqmn::Events {
            topic: EventTopic::App("ch1".into()),
            verb: Some("stuff".into()),
        },
        "E:ch1:stuff",
    );
    check(
        "0Ex:0Rx:Registered",
        Fqmn::Events {
            topic: EventTopic::Names {
                kind: "registered".into(),
            },
            verb: None,
        },
        "E:R:registered",
    );
    check(
        "E:R:a.mcom:Transferred:READ",
        Fqmn::Events {
            topic: EventTopic::Name {
                name: "a.mcom".into(),
                kind: Some("transferred".into()),
            },
            verb: None,
        },
        "E:R:a.mcom:transferred",
    );
    check(
        "E:S:0xab:note:read",
        Fqmn::Events {
            topic: EventTopic::Context {
                context: "0xab".into(),
                event: Some("note".into()),
            },
            verb: None,
        },
        "E:S:0xab:note",
    );
    // The miner's two integers joined by a dot stay as written; so does plain text.
    check(
        "0xEW:events.mined:12345.67890",
        Fqmn::Publish {
            topic: PublishTopic::App("events.mined".into()),
            payload: Payload::Text("12345.67890".into()),
        },
        "EW:events.mined:12345.67890",
    );
    check(
        "EW:chat:hello there: all",
        Fqmn::Publish {
            topic: PublishTopic::App("chat".into()),
            payload: Payload::Text("hello there: all".into()),
        },
        "EW:chat:hello there: all",
    );
    check(
        "EW:chat:42",
        Fqmn::Publish {
            topic: PublishTopic::App("chat".into()),
            payload: Payload::Json(json!(42)),
        },
        "EW:chat:42",
    );
    assert_eq!(Payload::Text("12345.67890".into()).to_value(), json!("12345.67890"));
    assert_eq!(Payload::Json(json!({"a": 1})).to_value(), json!({"a": 1}));
    // A context write always names a method.
    assert!(err("SW:0x001").contains("missing method"));
}

#[test]
fn all_spellings_of_every_prefix_agree() {
    let bodies = [
        ("I", "whoami"),
        ("S", "0xab:get"),
        ("SW", "0xab:set:[1]"),
        ("A", "^1:0xab:get"),
        ("R", "a.mcom"),
        ("RW", "release:{}"),
        ("E", "chat"),
        ("EW", "chat:1"),
        ("C", "x"),
        ("CW", "x"),
        ("P", "ping"),
    ];
    for (letter, body) in bodies {
        let short = parse(&format!("{letter}:{body}"));
        assert_eq!(short.service_letter(), letter);
        assert_eq!(parse(&format!("0x{letter}:{body}")), short);
        assert_eq!(parse(&format!("0{letter}x:{body}")), short);
    }
}

#[test]
fn other_forms() {
    check(
        "  P:ping \n",
        Fqmn::Router {
            method: "ping".into(),
            args: None,
        },
        "P:ping",
    );
    check(
        "I:login:{ \"a\" : [1, 2] }",
        Fqmn::Iam {
            method: "login".into(),
            args: Some(json!({"a": [1, 2]})),
        },
        r#"I:login:{"a":[1,2]}"#,
    );
    check(
        "S:ABCDEF:get",
        Fqmn::State {
            write: false,
            context: "0xabcdef".into(),
            method: "get".into(),
            args: None,
        },
        "S:0xabcdef:get",
    );
    check(
        "A: >=1.2, <2 :0X0A:m:null",
        Fqmn::Assembly {
            write: false,
            version_req: ">=1.2, <2".into(),
            context: "0x0a".into(),
            method: "m".into(),
            args: Some(Value::Null),
        },
        "A:>=1.2, <2:0x0a:m:null",
    );
    check(
        "R:list",
        Fqmn::RegistrarCall {
            write: false,
            method: "list".into(),
            params: None,
        },
        "R:list",
    );
    check(
        "E:R:a.mcom",
        Fqmn::Events {
            topic: EventTopic::Name {
                name: "a.mcom".into(),
                kind: None,
            },
            verb: None,
        },
        "E:R:a.mcom",
    );
    check(
        "E:0xS:0XAB:member-joined",
        Fqmn::Events {
            topic: EventTopic::Context {
                context: "0xab".into(),
                event: Some("member-joined".into()),
            },
            verb: None,
        },
        "E:S:0xab:member-joined",
    );
    check(
        "E:S:ab",
        Fqmn::Events {
            topic: EventTopic::Context {
                context: "0xab".into(),
                event: None,
            },
            verb: None,
        },
        "E:S:0xab",
    );
    check(
        r#"EW:0xS:0XAB:note-added:{"text":"a:b"}"#,
        Fqmn::Publish {
            topic: PublishTopic::Context {
                context: "0xab".into(),
                event: "note-added".into(),
            },
            payload: Payload::Json(json!({"text": "a:b"})),
        },
        r#"EW:S:0xab:note-added:{"text":"a:b"}"#,
    );
    check(
        "CW:  propose block 7  ",
        Fqmn::Consensus {
            write: true,
            body: "propose block 7".into(),
        },
        "CW:propose block 7",
    );
    check(
        "C:a:b:c",
        Fqmn::Consensus {
            write: false,
            body: "a:b:c".into(),
        },
        "C:a:b:c",
    );
}

#[test]
fn helpers() {
    let f = parse("SW:0xab:set");
    assert_eq!(f.service_letter(), "SW");
    assert!(f.is_write());
    assert!(!parse("S:0xab:get").is_write());
    assert!(!parse("R:a.mcom").is_write());
    assert!(parse("RW:release:{}").is_write());
    assert!(parse("EW:t:1").is_write());
    assert!(parse("CW:x").is_write());
    assert_eq!(parse("R:a.mcom").service_letter(), "R");
    assert_eq!(parse("E:R:a.mcom").service_letter(), "E");

    let target = parse(r#"S:0xab:hello_world:["World"]"#);
    let called = target.clone().with_args(Some(json!(["Dexter"])));
    assert_eq!(called.to_string(), r#"S:0xab:hello_world:["Dexter"]"#);
    assert_eq!(target.clone().with_args(None), target);
    assert_eq!(parse("I:whoami").with_args(Some(json!(1))).to_string(), "I:whoami:1");
    assert_eq!(parse("R:list").with_args(Some(json!({}))).to_string(), "R:list:{}");
    assert_eq!(parse("EW:t:1").with_args(Some(json!(2))).to_string(), "EW:t:2");
    let events = parse("E:chat");
    assert_eq!(events.clone().with_args(Some(json!(1))), events);
    let consensus = parse("C:x");
    assert_eq!(consensus.clone().with_args(Some(json!(1))), consensus);
}

#[test]
fn serde_as_string() {
    let f = parse("0Rx:A.mcom");
    let json = serde_json::to_string(&f).unwrap();
    assert_eq!(json, r#""R:a.mcom""#);
    assert_eq!(serde_json::from_str::<Fqmn>(&json).unwrap(), f);
    assert!(serde_json::from_str::<Fqmn>(r#""X:y""#).is_err());
}

const PREFIXES: &str = "expected one of I, S, SW, R, RW, E, EW, A, AW, C, CW, P (or the seed spellings 0xS:, 0Sx:)";

#[test]
fn errors() {
    let cases: Vec<(&str, String)> = vec![
        ("", "empty FQMN: expected `<SVC>:<body>`, e.g. `I:whoami`".into()),
        (" \t\n", "empty FQMN: expected `<SVC>:<body>`, e.g. `I:whoami`".into()),
        (
            "whoami",
            "missing service prefix in `whoami`: expected `<SVC>:` at the start, where SVC is one of I, S, SW, R, RW, E, EW, A, AW, C, CW, P (e.g. `I:whoami`)".into(),
        ),
        (
            "0xI",
            "missing `:` and body after the service prefix: expected `I:<method>[:<args-json>]`".into(),
        ),
        ("X:y", format!("unknown service prefix `X:` — {PREFIXES}")),
        (
            "s:0xab:get",
            format!("unknown service prefix `s:` — {PREFIXES}; service letters are upper-case: did you mean `S:`?"),
        ),
        (
            "0xsw:0xab:get",
            format!("unknown service prefix `0xsw:` — {PREFIXES}; service letters are upper-case: did you mean `SW:`?"),
        ),
        (
            "IW:whoami",
            format!("unknown service prefix `IW:` — {PREFIXES}; the IAM service has no write form, use `I:`"),
        ),
        (
            "PW:ping",
            format!("unknown service prefix `PW:` — {PREFIXES}; the router service has no write form, use `P:`"),
        ),
        ("I:", "empty method: expected `I:<method>[:<args-json>]`".into()),
        ("P::1", "empty method: expected `P:<method>[:<args-json>]`".into()),
        (
            "I:who ami",
            "invalid method `who ami`: a method is a letter or `_` followed by letters, digits or `_` (expected `I:<method>[:<args-json>]`)".into(),
        ),
        (
            "S:0xab:9lives",
            "invalid method `9lives`: a method is a letter or `_` followed by letters, digits or `_` (expected `S:<context>:<method>[:<args-json>]`)".into(),
        ),
        (
            "I:whoami:",
            "empty args after the last `:` — give JSON or drop the trailing `:` (expected `I:<method>[:<args-json>]`)".into(),
        ),
        (
            "I:whoami:[1,",
            "args must be JSON: EOF while parsing a value at line 1 column 3".into(),
        ),
        (
            "I:whoami:Dexter",
            "args must be JSON: expected value at line 1 column 1".into(),
        ),
        (
            "R:resolve:{name}",
            "params must be JSON: key must be a string at line 1 column 2".into(),
        ),
        (
            "SW:0xab",
            "missing method after the context: expected `SW:<context>:<method>[:<args-json>]`".into(),
        ),
        (
            "SW:0x:set",
            "empty context: expected hex digits, optionally prefixed by 0x (in `SW:<context>:<method>[:<args-json>]`)".into(),
        ),
        (
            "S:0xzz:get",
            "invalid context `0xzz`: expected hex digits, optionally prefixed by 0x (e.g. `0x03389f0e08b9f`)".into(),
        ),
        (
            "A::0xab:m",
            "empty version requirement: expected `A:<version-req>:<context>:<method>[:<args-json>]`, e.g. `A:~4.1.3:0x03389f:hello_world`".into(),
        ),
        (
            "A:~4.1.3!:0xab:m",
            "invalid version requirement `~4.1.3!`: unexpected character `!` (allowed: letters, digits, space and . ~ ^ * < > = , + -)".into(),
        ),
        (
            "A:~4.1.3",
            "missing context after the version requirement: expected `A:<version-req>:<context>:<method>[:<args-json>]`".into(),
        ),
        (
            "A:~4.1.3:0xab",
            "missing method after the context: expected `A:<version-req>:<context>:<method>[:<args-json>]`".into(),
        ),
        (
            "R:hello_world.mcom",
            "invalid name `hello_world.mcom`: labels may only contain letters, digits and `-` (e.g. `helloworld.mcom`)".into(),
        ),
        (
            "R:a..mcom",
            "invalid name `a..mcom`: a name cannot have an empty label (`..` or a leading or trailing `.`) (e.g. `helloworld.mcom`)".into(),
        ),
        (
            "R:a.mcom:",
            "empty args after the last `:` — give JSON or drop the trailing `:` (expected `R:<name>[:<args-json>]`)".into(),
        ),
        (
            "RW:a.mcom:{}",
            "`RW:` takes a registrar method, not a name: to register `a.mcom`, send `RW:register:{\"name\":\"a.mcom\",\"target\":\"<fqmn>\"}`; to call it, use `R:a.mcom[:<args-json>]`".into(),
        ),
        (
            "RW:",
            "empty method: expected `RW:<method>[:<params-json>]`".into(),
        ),
        (
            "E:",
            "empty event topic: expected `E:<topic>` (e.g. `E:chat.room1`), `E:R:<name>[:<kind>]` or `E:S:<context>[:<event>]`".into(),
        ),
        (
            "E:chat..room",
            "invalid event topic `chat..room`: expected dot-separated tokens of letters, digits, `_` or `-` (e.g. `chat.room1`), `E:R:<name>[:<kind>]` or `E:S:<context>[:<event>]`".into(),
        ),
        (
            "E:chat:ro-om",
            "invalid event verb `ro-om`: expected letters or `_` (e.g. `read`) after the topic".into(),
        ),
        (
            "E:chat.room:",
            "invalid event verb ``: expected letters or `_` (e.g. `read`) after the topic".into(),
        ),
        (
            "E:I:whoami",
            "cannot subscribe to `I:`: `E:` takes an application topic, `E:R:<name>[:<kind>]` or `E:S:<context>[:<event>]`".into(),
        ),
        (
            "E:RW:a.mcom",
            "cannot subscribe to `RW:`: `E:` takes an application topic, `E:R:<name>[:<kind>]` or `E:S:<context>[:<event>]`".into(),
        ),
        (
            "E:R:li-st",
            "invalid name `li-st`: `E:R:` takes a registrar name with at least two labels separated by `.`, or an event kind of letters and `_` (e.g. `helloworld.mcom`)".into(),
        ),
        (
            "E:R:a.mcom:Trans-ferred",
            "invalid event kind `Trans-ferred`: expected letters or `_` (e.g. `Transferred`) in `E:R:<name>:<kind>` or `E:R:<kind>`".into(),
        ),
        (
            "E:R:a.mcom:",
            "missing event kind after the last `:`: expected `E:R:<name>[:<kind>[:<verb>]]`".into(),
        ),
        (
            "E:S:0xab:a.b",
            "invalid context event `a.b`: expected letters, digits, `_` or `-` in `E:S:<context>[:<event>]`".into(),
        ),
        (
            "E:S:0xab:",
            "missing context event after the last `:`: expected `E:S:<context>[:<event>]`".into(),
        ),
        (
            "EW:chat",
            "missing payload after the topic: expected `EW:<topic>:<payload>`".into(),
        ),
        (
            "EW:S:0xab",
            "missing event after the context: expected `EW:S:<context>:<event>:<payload>`".into(),
        ),
        (
            "EW:S:0xab:posted",
            "missing payload after the event: expected `EW:S:<context>:<event>:<payload>`".into(),
        ),
        (
            "EW:S:0xab::1",
            "missing event after the context: expected `EW:S:<context>:<event>:<payload>`".into(),
        ),
        (
            "EW:S:0xab:a.b:1",
            "invalid context event `a.b`: expected letters, digits, `_` or `-` in \
             `EW:S:<context>:<event>:<payload>`"
                .into(),
        ),
        (
            "EW:S:zz:posted:1",
            "invalid context `zz`: expected hex digits, optionally prefixed by 0x (e.g. `0x03389f0e08b9f`)".into(),
        ),
        (
            "EW:chat:",
            "empty payload after the last `:` — give JSON or drop the trailing `:` (expected `EW:<topic>:<payload>`)".into(),
        ),
        (
            "EW:chat room:1",
            "invalid event topic `chat room`: expected dot-separated tokens of letters, digits, `_` or `-` (e.g. `chat.room1`)".into(),
        ),
        ("C:", "empty consensus body: expected `C:<body>`".into()),
        ("CW:   ", "empty consensus body: expected `CW:<body>`".into()),
    ];
    for (input, expected) in cases {
        assert_eq!(err(input), expected, "error for `{input}`");
    }
}

#[test]
fn name_limits() {
    let label = "a".repeat(63);
    let ok = format!("{label}.{label}.{label}.{}", "b".repeat(61)); // 253 bytes
    assert_eq!(ok.len(), 253);
    assert_eq!(parse(&format!("R:{ok}")).to_string(), format!("R:{ok}"));
    let long = format!("{ok}b");
    assert_eq!(
        err(&format!("R:{long}")),
        format!(
            "invalid name `{}`: a name is at most 253 characters long (e.g. `helloworld.mcom`)",
            excerpt(&long)
        )
    );
}

#[test]
fn too_long_and_excerpts() {
    let big = format!("I:m:\"{}\"", "x".repeat(MAX_FQMN_LEN));
    assert_eq!(
        err(&big),
        format!("FQMN too long: {} bytes, the limit is 65536 bytes", big.len())
    );
    // Exactly at the limit is fine.
    let at_limit = format!("I:m:\"{}\"", "x".repeat(MAX_FQMN_LEN - 6));
    assert_eq!(at_limit.len(), MAX_FQMN_LEN);
    assert!(at_limit.parse::<Fqmn>().is_ok());
    // Excerpts cut on char boundaries.
    let msg = err(&format!("{}:x", "é".repeat(100)));
    assert!(msg.starts_with(&format!("unknown service prefix `{}…:`", "é".repeat(64))));
}

/// Canonical JSON must re-parse to the same numbers. serde_json only guarantees that
/// for long floats with its `float_roundtrip` feature, which this workspace enables
/// (through serde_jcs in cmesh-common); this test fails if that ever goes away.
#[test]
fn long_floats_round_trip() {
    let input = "I:m:[1.0306294108755396516e136,1.37867260132403083402e-139,\
                 123456789012345678901,0.1,-0,1E5,2.2250738585072014e-308]";
    let ast = parse(input);
    let canonical = ast.to_string();
    assert_eq!(parse(&canonical), ast, "canonical form `{canonical}`");
    assert_eq!(parse(&canonical).to_string(), canonical);
}

#[test]
fn unicode_never_panics() {
    for s in [
        "é",
        "é:",
        ":é",
        "0é:x",
        "0xé:",
        "Sé:",
        "S:é:é",
        "R:é.é",
        "E:é",
        "E:Ré:x",
        "A:é:é:é",
        "\u{10FFFF}:\u{10FFFF}",
        "I:m:\"\u{0}\"",
        "0x",
        "0",
        "0x:",
        "0:",
        "0x0:",
        "W:",
        "0Wx:",
    ] {
        let _ = s.parse::<Fqmn>();
    }
}
