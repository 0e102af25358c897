//! Registrar tests: name rules, and the store over real redb files.

use std::path::{Path, PathBuf};

use cmesh_common::{Address, CmtpError, Status};
use proptest::prelude::*;
use tempfile::TempDir;

use super::*;

const ALICE: Address = Address([0xa1; 20]);
const BOB: Address = Address([0xb0; 20]);
const CAROL: Address = Address([0xc4; 20]);

fn policy() -> NamePolicy {
    NamePolicy::default()
}

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("registrar.redb");
    (dir, path)
}

fn open_store(path: &Path) -> RegistrarStore {
    RegistrarStore::open(path, policy()).expect("open store")
}

// ---------------------------------------------------------------- names

#[test]
fn registrar_names_good_ones_normalise_to_lower_case() {
    let policy = policy();
    let cases = [
        ("hello.mcom", "hello.mcom"),
        ("helloWorldExample.mcom", "helloworldexample.mcom"),
        ("HELLO.MCOM", "hello.mcom"),
        ("a.mcom", "a.mcom"),
        ("0.mcom", "0.mcom"),
        ("a-b-c.mcom", "a-b-c.mcom"),
        ("xn--bcher-kva.mcom", "xn--bcher-kva.mcom"),
        ("123abc.mcom", "123abc.mcom"),
    ];
    for (input, want) in cases {
        assert_eq!(policy.normalize(input).as_deref(), Ok(want), "input {input:?}");
    }
    let longest = format!("{}.mcom", "a".repeat(MAX_LABEL_LEN));
    assert_eq!(policy.normalize(&longest), Ok(longest.clone()));
}

#[test]
fn registrar_names_bad_ones_say_what_is_wrong() {
    let policy = policy();
    let too_long_label = format!("{}.mcom", "a".repeat(MAX_LABEL_LEN + 1));
    let way_too_long = "a".repeat(10_000);
    let cases: Vec<(&str, &str)> = vec![
        ("", "name is empty: a name is `label.tld`, e.g. `hello.mcom`"),
        ("hello", "`hello` has no tld: a name is `label.tld`, e.g. `hello.mcom`"),
        (
            "a.b.mcom",
            "`a.b.mcom` has 3 labels: a name is exactly two labels, `label.tld`, e.g. `hello.mcom`",
        ),
        (
            "hello.mcom.",
            "`hello.mcom.` has 3 labels: a name is exactly two labels, `label.tld`, e.g. `hello.mcom`",
        ),
        (
            ".mcom",
            "`.mcom` has an empty label: a name is `label.tld`, each part 1 to 63 characters",
        ),
        (
            "hello.",
            "`hello.` has an empty label: a name is `label.tld`, each part 1 to 63 characters",
        ),
        ("example.com", "unknown tld `com`: this mesh serves .mcom"),
        ("Example.COM", "unknown tld `com`: this mesh serves .mcom"),
        (
            "hello_world.mcom",
            "label `hello_world` contains `_`: a label may contain only letters a-z (any case), \
             digits 0-9 and hyphens",
        ),
        (
            "hello world.mcom",
            "label `hello world` contains a space: a label may contain only letters a-z (any \
             case), digits 0-9 and hyphens",
        ),
        (
            "héllo.mcom",
            "label `héllo` contains `é`: a label may contain only letters a-z (any case), \
             digits 0-9 and hyphens",
        ),
        (
            "he\nllo.mcom",
            "label `he\\nllo` contains the character \\u{a}: a label may contain only letters \
             a-z (any case), digits 0-9 and hyphens",
        ),
        (
            "-hello.mcom",
            "label `-hello` starts with a hyphen: a label must start and end with a letter or digit",
        ),
        (
            "hello-.mcom",
            "label `hello-` ends with a hyphen: a label must start and end with a letter or digit",
        ),
        (&too_long_label, "is 64 characters long: a label is 1 to 63 characters"),
        (
            &way_too_long,
            "name is 10000 bytes long: a name is `label.tld`, at most 127 characters",
        ),
    ];
    for (input, message) in cases {
        let error = policy.normalize(input).expect_err(input);
        let text = error.to_string();
        assert!(
            text.ends_with(message),
            "input {input:?}: got {text:?}, want {message:?}"
        );
        let cmtp = CmtpError::from(RegistrarError::from(error));
        assert_eq!(cmtp.status, Status::UNPROCESSABLE, "input {input:?}");
    }
}

#[test]
fn registrar_names_several_tlds_are_listed_in_messages() {
    let policy = NamePolicy::new([".MCOM", "mesh", "mcom"]).expect("valid tlds");
    assert_eq!(policy.tlds(), ["mcom", "mesh"]);
    assert_eq!(policy.normalize("a.MESH").as_deref(), Ok("a.mesh"));
    let error = policy.normalize("a.com").expect_err("unknown tld");
    assert_eq!(error.to_string(), "unknown tld `com`: this mesh serves .mcom, .mesh");
}

#[test]
fn registrar_names_bad_tld_config_is_refused() {
    assert_eq!(NamePolicy::new(Vec::<String>::new()), Err(TldConfigError::Empty));
    for bad in ["", ".", "m_com", "-mcom", "a.b"] {
        let error = NamePolicy::new([bad]).expect_err(bad);
        assert!(
            error
                .to_string()
                .starts_with(&format!("configured tld `{bad}` is not a valid label")),
            "{bad:?}: {error}"
        );
    }
}

#[test]
fn registrar_targets_must_be_non_empty_and_at_most_1024_bytes() {
    assert_eq!(check_target("I:whoami"), Ok(()));
    assert_eq!(check_target(&"x".repeat(MAX_TARGET_BYTES)), Ok(()));
    assert_eq!(check_target(""), Err(TargetError::Empty));
    assert_eq!(
        check_target(&"x".repeat(MAX_TARGET_BYTES + 1)),
        Err(TargetError::TooLong {
            len: MAX_TARGET_BYTES + 1
        })
    );
    let cmtp = CmtpError::from(RegistrarError::from(TargetError::Empty));
    assert_eq!(cmtp.status, Status::UNPROCESSABLE);
    assert!(cmtp.message.starts_with("target is empty"), "{}", cmtp.message);
}

proptest! {
    #[test]
    fn registrar_names_valid_labels_always_pass(
        label in "[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?",
        tld_upper in any::<bool>(),
    ) {
        let tld = if tld_upper { "MCOM" } else { "mcom" };
        let name = policy().normalize(&format!("{label}.{tld}"));
        prop_assert_eq!(name, Ok(format!("{}.mcom", label.to_ascii_lowercase())));
    }

    #[test]
    fn registrar_names_never_panic_and_results_are_canonical(
        input in "\\PC{0,80}|[a-z.-]{0,80}",
    ) {
        let policy = policy();
        if let Ok(name) = policy.normalize(&input) {
            // A normalised name is its own normal form and is pure lower-case ASCII.
            prop_assert_eq!(policy.normalize(&name), Ok(name.clone()));
            let canonical =
                |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b);
            prop_assert!(name.bytes().all(canonical));
        }
    }
}

// ---------------------------------------------------------------- records

#[test]
fn registrar_records_serialise_with_the_documented_field_names() {
    let record = NameRecord {
        name: "hello.mcom".into(),
        owner: ALICE,
        target: "I:whoami".into(),
        registered_at: 1,
        updated_at: 2,
    };
    let json = serde_json::to_value(&record).expect("json");
    assert_eq!(
        json,
        serde_json::json!({
            "name": "hello.mcom",
            "owner": ALICE.to_string(),
            "target": "I:whoami",
            "registered_at": 1,
            "updated_at": 2,
        })
    );
    let change = NameChange::transferred(&record, BOB);
    let json = serde_json::to_value(&change).expect("json");
    assert_eq!(
        json,
        serde_json::json!({
            "kind": "transferred",
            "name": "hello.mcom",
            "owner_before": BOB.to_string(),
            "owner_after": ALICE.to_string(),
            "target": "I:whoami",
        })
    );
    let released = serde_json::to_value(NameChange::released(&record)).expect("json");
    assert_eq!(released["kind"], "released");
    assert_eq!(released["owner_after"], serde_json::Value::Null);
}

// ---------------------------------------------------------------- store

#[test]
fn registrar_store_register_resolve_transfer_release_list() {
    let (_dir, path) = temp_db();
    let store = open_store(&path);

    let (record, change) = store
        .register(ALICE, "Hello.MCOM", "S:0xabc:hello_world", 100)
        .expect("register");
    let expected = NameRecord {
        name: "hello.mcom".into(),
        owner: ALICE,
        target: "S:0xabc:hello_world".into(),
        registered_at: 100,
        updated_at: 100,
    };
    assert_eq!(record, expected);
    assert_eq!(
        change,
        NameChange {
            kind: ChangeKind::Registered,
            name: "hello.mcom".into(),
            owner_before: None,
            owner_after: Some(ALICE),
            target: "S:0xabc:hello_world".into(),
        }
    );
    assert!(!change.is_noop());
    assert_eq!(store.resolve("HELLO.mcom").expect("resolve"), expected);

    let (moved, change) = store.transfer(ALICE, "hello.mcom", BOB, 200).expect("transfer");
    assert_eq!(
        moved,
        NameRecord {
            owner: BOB,
            updated_at: 200,
            ..expected.clone()
        }
    );
    assert_eq!(change.kind, ChangeKind::Transferred);
    assert_eq!((change.owner_before, change.owner_after), (Some(ALICE), Some(BOB)));
    assert_eq!(store.resolve("hello.mcom").expect("resolve"), moved);

    store.register(ALICE, "b.mcom", "I:whoami", 300).expect("register b");
    store.register(BOB, "a.mcom", "I:whoami", 300).expect("register a");
    let names = |records: Vec<NameRecord>| -> Vec<String> { records.into_iter().map(|record| record.name).collect() };
    assert_eq!(
        names(store.list(None).expect("list")),
        ["a.mcom", "b.mcom", "hello.mcom"]
    );
    assert_eq!(names(store.list(Some(BOB)).expect("list")), ["a.mcom", "hello.mcom"]);
    assert_eq!(names(store.list(Some(ALICE)).expect("list")), ["b.mcom"]);
    assert!(store.list(Some(CAROL)).expect("list").is_empty());

    let (gone, change) = store.release(BOB, "hello.mcom").expect("release");
    assert_eq!(gone, moved);
    assert_eq!(change.kind, ChangeKind::Released);
    assert_eq!((change.owner_before, change.owner_after), (Some(BOB), None));
    assert_eq!(
        store.resolve("hello.mcom").expect_err("released").status(),
        Status::NOT_FOUND
    );
    assert_eq!(names(store.list(None).expect("list")), ["a.mcom", "b.mcom"]);
}

#[test]
fn registrar_store_refusals_have_status_and_message() {
    let (_dir, path) = temp_db();
    let store = open_store(&path);
    store.register(ALICE, "hello.mcom", "I:whoami", 1).expect("register");

    let taken = store.register(BOB, "HELLO.mcom", "I:other", 2).expect_err("taken");
    assert_eq!(taken.status(), Status::CONFLICT);
    assert_eq!(
        taken.to_string(),
        format!("name `hello.mcom` is already registered to {ALICE}")
    );
    // Also for the owner: registering is not an update.
    let again = store.register(ALICE, "hello.mcom", "I:whoami", 2).expect_err("taken");
    assert_eq!(again.status(), Status::CONFLICT);

    let not_owner = store.transfer(BOB, "hello.mcom", BOB, 2).expect_err("not owner");
    assert_eq!(not_owner.status(), Status::FORBIDDEN);
    assert_eq!(
        not_owner.to_string(),
        format!("only the owner {ALICE} may transfer `hello.mcom`")
    );
    let not_owner = store.release(BOB, "hello.mcom").expect_err("not owner");
    assert_eq!(not_owner.status(), Status::FORBIDDEN);
    assert_eq!(
        not_owner.to_string(),
        format!("only the owner {ALICE} may release `hello.mcom`")
    );

    for error in [
        store.resolve("nope.mcom").expect_err("missing"),
        store.transfer(ALICE, "nope.mcom", BOB, 2).expect_err("missing"),
        store.release(ALICE, "nope.mcom").expect_err("missing"),
    ] {
        assert_eq!(error.status(), Status::NOT_FOUND);
        assert_eq!(error.to_string(), "name `nope.mcom` is not registered");
    }

    for error in [
        store
            .register(ALICE, "bad_name.mcom", "I:whoami", 2)
            .expect_err("bad name"),
        store.register(ALICE, "fine.mcom", "", 2).expect_err("empty target"),
        store
            .register(ALICE, "fine.mcom", &"x".repeat(1025), 2)
            .expect_err("long target"),
        store.resolve("hello.com").expect_err("bad tld"),
        store.transfer(ALICE, "hello", BOB, 2).expect_err("bad name"),
        store.release(ALICE, "-hello.mcom").expect_err("bad name"),
    ] {
        assert_eq!(error.status(), Status::UNPROCESSABLE, "{error}");
    }
    assert_eq!(
        store.resolve("fine.mcom").expect_err("not written").status(),
        Status::NOT_FOUND
    );
}

#[test]
fn registrar_store_rejected_requests_persist_nothing() {
    let (_dir, path) = temp_db();
    let store = open_store(&path);
    store.register(ALICE, "hello.mcom", "I:whoami", 1).expect("register");
    store.register(BOB, "other.mcom", "I:whoami", 1).expect("register");
    let bytes_before = store.raw("hello.mcom").expect("raw").expect("present");
    let list_before = store.list(None).expect("list");

    store.register(BOB, "hello.mcom", "I:evil", 5).expect_err("409");
    store.transfer(BOB, "hello.mcom", BOB, 5).expect_err("403");
    store.release(BOB, "hello.mcom").expect_err("403");
    store.transfer(ALICE, "missing.mcom", BOB, 5).expect_err("404");
    store.register(ALICE, "bad_.mcom", "I:whoami", 5).expect_err("422");

    assert_eq!(store.raw("hello.mcom").expect("raw").expect("present"), bytes_before);
    assert_eq!(store.raw("missing.mcom").expect("raw"), None);
    assert_eq!(store.list(None).expect("list"), list_before);
}

#[test]
fn registrar_store_transfer_to_self_is_a_noop_that_writes_nothing() {
    let (_dir, path) = temp_db();
    let store = open_store(&path);
    let (record, _) = store.register(ALICE, "hello.mcom", "I:whoami", 1).expect("register");
    let bytes_before = store.raw("hello.mcom").expect("raw");

    let (same, change) = store.transfer(ALICE, "hello.mcom", ALICE, 99).expect("self transfer");
    assert_eq!(same, record, "updated_at does not move");
    assert!(change.is_noop());
    assert_eq!((change.owner_before, change.owner_after), (Some(ALICE), Some(ALICE)));
    assert_eq!(store.raw("hello.mcom").expect("raw"), bytes_before);
}

#[test]
fn registrar_store_released_names_can_be_registered_again() {
    let (_dir, path) = temp_db();
    let store = open_store(&path);
    store.register(ALICE, "hello.mcom", "I:whoami", 1).expect("register");
    store.release(ALICE, "hello.mcom").expect("release");
    let (record, change) = store.register(BOB, "hello.mcom", "I:other", 7).expect("re-register");
    assert_eq!((record.owner, record.registered_at, record.updated_at), (BOB, 7, 7));
    assert_eq!(change.kind, ChangeKind::Registered);
    assert_eq!(store.resolve("hello.mcom").expect("resolve"), record);
}

#[test]
fn registrar_store_list_is_capped_and_sorted() {
    let (_dir, path) = temp_db();
    drop(open_store(&path));
    // More than the cap, inserted in reverse order in one transaction (a durable commit per
    // name would only make the test slow).
    {
        let db = redb::Database::create(&path).expect("open");
        let txn = db.begin_write().expect("write");
        {
            let names: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("names");
            let mut table = txn.open_table(names).expect("names");
            for i in (0..LIST_CAP + 5).rev() {
                let record = NameRecord {
                    name: format!("n{i:05}.mcom"),
                    owner: if i % 2 == 0 { ALICE } else { BOB },
                    target: "I:whoami".into(),
                    registered_at: 1,
                    updated_at: 1,
                };
                let bytes = rmp_serde::to_vec_named(&record).expect("encode");
                table.insert(record.name.as_str(), bytes.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    let store = open_store(&path);
    let all = store.list(None).expect("list");
    assert_eq!(all.len(), LIST_CAP);
    assert_eq!(all[0].name, "n00000.mcom");
    assert_eq!(all[LIST_CAP - 1].name, format!("n{:05}.mcom", LIST_CAP - 1));
    assert!(all.windows(2).all(|pair| pair[0].name < pair[1].name));
    let alice = store.list(Some(ALICE)).expect("list");
    assert_eq!(alice.len(), LIST_CAP.div_ceil(2) + 3);
    assert!(alice.iter().all(|record| record.owner == ALICE));
}

#[test]
fn registrar_store_persists_across_reopen() {
    let (_dir, path) = temp_db();
    {
        let store = open_store(&path);
        store.register(ALICE, "hello.mcom", "I:whoami", 1).expect("register");
        store.register(ALICE, "gone.mcom", "I:whoami", 1).expect("register");
        store.transfer(ALICE, "hello.mcom", BOB, 2).expect("transfer");
        store.release(ALICE, "gone.mcom").expect("release");
    }
    let store = open_store(&path);
    let record = store.resolve("hello.mcom").expect("resolve after reopen");
    assert_eq!((record.owner, record.registered_at, record.updated_at), (BOB, 1, 2));
    assert_eq!(
        store.resolve("gone.mcom").expect_err("released").status(),
        Status::NOT_FOUND
    );
}

#[test]
fn registrar_store_refuses_a_newer_schema() {
    let (_dir, path) = temp_db();
    {
        let db = redb::Database::create(&path).expect("create");
        let txn = db.begin_write().expect("write");
        {
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            let mut table = txn.open_table(meta).expect("meta");
            table.insert("schema_version", SCHEMA_VERSION + 1).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let error = RegistrarStore::open(&path, policy()).expect_err("newer schema");
    assert!(matches!(error, RegistrarError::Schema { .. }), "{error}");
    assert_eq!(CmtpError::from(error).status, Status::INTERNAL);
}

#[test]
fn registrar_store_reports_corrupt_records_as_500() {
    let (_dir, path) = temp_db();
    {
        let store = open_store(&path);
        store.register(ALICE, "hello.mcom", "I:whoami", 1).expect("register");
    }
    {
        let db = redb::Database::create(&path).expect("open");
        let txn = db.begin_write().expect("write");
        {
            let names: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("names");
            let mut table = txn.open_table(names).expect("names");
            table.insert("junk.mcom", &b"\xc1not msgpack"[..]).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = open_store(&path);
    for error in [
        store.resolve("junk.mcom").expect_err("corrupt"),
        store.list(None).expect_err("corrupt"),
        store.release(ALICE, "junk.mcom").expect_err("corrupt"),
    ] {
        assert_eq!(error.status(), Status::INTERNAL, "{error}");
        assert!(
            error
                .to_string()
                .contains("stored record for `junk.mcom` is unreadable"),
            "{error}"
        );
    }
    assert_eq!(
        store.resolve("hello.mcom").expect("good record still resolves").owner,
        ALICE
    );
}

#[test]
fn registrar_store_open_failure_is_an_error_not_a_panic() {
    let (dir, _) = temp_db();
    let path = dir.path().join("no-such-dir").join("registrar.redb");
    let error = RegistrarStore::open(&path, policy()).expect_err("missing parent");
    assert!(matches!(error, RegistrarError::Open { .. }), "{error}");
}

// ---------------------------------------------------------------- actor

#[test]
fn registrar_error_can_cross_threads() {
    // The node wraps startup errors in anyhow, which needs Send + Sync + 'static.
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<RegistrarError>();
}
