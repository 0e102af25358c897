use super::*;

#[test]
fn reply_headers_success() {
    let h = reply_headers(200, "application/json", None);
    assert_eq!(h.get(cmtp::HEADER_VERSION).unwrap().as_str(), "CMTP/0");
    assert_eq!(h.get(cmtp::HEADER_STATUS).unwrap().as_str(), "200");
    assert_eq!(h.get(CONTENT_TYPE).unwrap().as_str(), "application/json");
    assert!(h.get(NATS_SERVICE_ERROR).is_none());
    assert!(h.get(NATS_SERVICE_ERROR_CODE).is_none());
}

#[test]
fn reply_headers_error_is_sanitised() {
    let h = reply_headers(403, "application/json", Some("no\r\naccess\tto x"));
    assert_eq!(h.get(cmtp::HEADER_STATUS).unwrap().as_str(), "403");
    assert_eq!(h.get(NATS_SERVICE_ERROR).unwrap().as_str(), "no  access to x");
    assert_eq!(h.get(NATS_SERVICE_ERROR_CODE).unwrap().as_str(), "403");

    let long = "é".repeat(300); // 600 bytes, 2 per char
    let h = reply_headers(500, "application/json", Some(&long));
    let v = h.get(NATS_SERVICE_ERROR).unwrap().as_str();
    assert!(v.len() <= MAX_ERROR_LEN && v.len() >= MAX_ERROR_LEN - 1);
    assert!(v.chars().all(|c| c == 'é'));

    let h = reply_headers(404, "application/json", Some(" \r\n"));
    assert_eq!(h.get(NATS_SERVICE_ERROR).unwrap().as_str(), "Not Found");
}

#[test]
fn sanitize_borrows_clean_values() {
    assert!(matches!(sanitize_header_value("fine"), Cow::Borrowed("fine")));
    let odd = "a\u{7f}b\u{0}c";
    assert_eq!(sanitize_header_value(odd), "a b c");
}

#[test]
fn rfc3339_formatting() {
    let at = |s: u64, n: u32| rfc3339_utc(UNIX_EPOCH + Duration::new(s, n));
    assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
    assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00Z");
    assert_eq!(at(1_700_000_000, 120_000_000), "2023-11-14T22:13:20.12Z");
    assert_eq!(at(4_102_444_799, 1), "2099-12-31T23:59:59.000000001Z");
}

#[test]
fn semver_and_names() {
    for ok in ["0.1.0", "1.2.3", "10.0.0-alpha.1", "1.0.0+build.7", "1.0.0-rc-1+x"] {
        assert!(is_semver(ok), "{ok}");
    }
    for bad in ["", "1", "1.2", "01.2.3", "1.2.3.4", "1.2.3-", "1.2.3-01", "v1.2.3"] {
        assert!(!is_semver(bad), "{bad}");
    }
    let ident = |name: &str, id: &str| ServiceIdentity {
        name: name.into(),
        id: id.into(),
        version: "0.1.0".into(),
        description: String::new(),
        metadata: HashMap::new(),
    };
    assert!(validate(&ident("cmesh", "abc")).is_ok());
    assert!(matches!(
        validate(&ident("c mesh", "a")),
        Err(MicroError::InvalidName(_))
    ));
    assert!(matches!(
        validate(&ident("cmesh", "a.b")),
        Err(MicroError::InvalidId(_))
    ));
}

#[test]
fn record_counts_and_ignores_bad_index() {
    let shared = Arc::new(Shared {
        identity: ServiceIdentity {
            name: "cmesh".into(),
            id: "x".into(),
            version: "0.1.0".into(),
            description: String::new(),
            metadata: HashMap::new(),
        },
        endpoints: vec![EndpointSpec {
            name: "e".into(),
            subject: "s".into(),
            queue_group: "cmesh".into(),
            metadata: HashMap::new(),
        }],
        counters: vec![Mutex::default()],
        started: rfc3339_utc(SystemTime::now()),
    });
    let micro = Micro {
        shared,
        control: Arc::new(Control { stop: Mutex::new(None) }),
    };
    micro.record(0, Duration::from_millis(2), None);
    micro.record(0, Duration::from_millis(4), Some(("bad\nthing", 400)));
    micro.record(7, Duration::from_millis(4), None);
    let c = lock(&micro.shared.counters[0]);
    assert_eq!((c.requests, c.errors), (2, 1));
    assert_eq!(c.processing, Duration::from_millis(6));
    assert_eq!(c.last_error, "400:bad thing");
}
