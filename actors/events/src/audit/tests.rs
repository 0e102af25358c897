use super::*;

fn h(byte: u8) -> [u8; 32] {
    [byte; 32]
}

/// A chain of `n` committed entries at `dir/audit.redb`.
fn chain(dir: &Path, n: u64) -> std::path::PathBuf {
    let path = dir.join(AUDIT_FILE);
    let mut log = AuditLog::open(&path).expect("open");
    for i in 0..n {
        log.append(1_000 + i, keccak256(&i.to_be_bytes()), h(i as u8), 200);
    }
    log.commit().expect("commit");
    path
}

/// Rewrites the stored entry `seq` with `change` applied.
fn tamper(path: &Path, seq: u64, change: impl FnOnce(&mut AuditEntry)) {
    let db = Database::open(path).expect("open for tampering");
    let txn = db.begin_write().expect("write");
    {
        let mut table = txn.open_table(ENTRIES).expect("table");
        let mut entry = {
            let guard = table.get(seq).expect("get").expect("entry exists");
            AuditEntry::decode(guard.value()).expect("decodes")
        };
        change(&mut entry);
        table.insert(seq, entry.encode().as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
}

fn remove(path: &Path, seq: u64) {
    let db = Database::open(path).expect("open for tampering");
    let txn = db.begin_write().expect("write");
    txn.open_table(ENTRIES).expect("table").remove(seq).expect("remove");
    txn.commit().expect("commit");
}

#[test]
fn preimage_layout_is_as_documented() {
    let entry = AuditEntry::new(
        0x0102030405060708,
        0x1112131415161718,
        h(0xa1),
        h(0xb2),
        h(0xc3),
        0xd4e5,
    );
    let pre = entry.preimage();
    assert_eq!(&pre[..14], b"cmesh-audit-v1");
    assert_eq!(pre[14..22], [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(pre[22..30], [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
    assert_eq!(pre[30..62], h(0xa1));
    assert_eq!(pre[62..94], h(0xb2));
    assert_eq!(pre[94..126], h(0xc3));
    assert_eq!(pre[126..], [0xd4, 0xe5]);
    assert_eq!(entry.hash, keccak256(&pre));
    assert_eq!(ENCODED_LEN, 146);
    let encoded = entry.encode();
    assert_eq!(encoded[..114], pre[14..]);
    assert_eq!(encoded[114..], entry.hash);
    assert_eq!(AuditEntry::decode(&encoded), Some(entry));
    assert_eq!(AuditEntry::decode(&encoded[1..]), None);
}

#[test]
fn entry_hash_fixed_vector() {
    // First entry of a chain: seq 1, prev zeros, request = keccak256("request"),
    // response = keccak256("response"), status 200, ts 1_700_000_000_000.
    // Cross-checked once against an independent Keccak-256 implementation.
    let entry = AuditEntry::new(
        1,
        1_700_000_000_000,
        ZERO,
        keccak256(b"request"),
        keccak256(b"response"),
        200,
    );
    assert_eq!(
        to_hex0x(&entry.hash),
        "0x4519e6ff26c7f75ca97940cfdafd820a8c5ad52ffa93109c0746ff9dfbcd3cfa"
    );
}

#[test]
fn record_round_trips() {
    let entry = AuditEntry::new(3, 9, h(1), h(2), h(3), 404);
    let record = entry.to_record(Address([0x44; 20]));
    let json = serde_json::to_value(&record).expect("encodes");
    assert_eq!(json["node"], "0x4444444444444444444444444444444444444444");
    assert_eq!(json["prev"], to_hex0x(&h(1)));
    assert_eq!(record.to_entry(), Some(entry));
}

#[test]
fn verify_accepts_a_good_chain_and_an_empty_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chain(dir.path(), 5);
    let report = verify_chain(&path).expect("valid chain");
    assert_eq!(report.entries, 5);
    assert_eq!(report.head, 5);

    let empty = tempfile::tempdir().expect("tempdir");
    let path = chain(empty.path(), 0);
    let report = verify_chain(&path).expect("valid empty chain");
    assert_eq!((report.entries, report.head, report.head_hash), (0, 0, ZERO));
}

#[test]
fn verify_names_an_entry_with_a_changed_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chain(dir.path(), 5);
    tamper(&path, 3, |entry| entry.status = 500);
    let err = verify_chain(&path).expect_err("tampered");
    assert_eq!(err.broken_seq(), Some(3), "{err}");
    assert!(matches!(
        err,
        AuditError::Broken {
            problem: ChainProblem::HashMismatch { .. },
            ..
        }
    ));
}

#[test]
fn verify_names_an_entry_with_a_broken_prev_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chain(dir.path(), 5);
    // A careful forger recomputes the entry's own hash; the link still breaks.
    tamper(&path, 4, |entry| {
        entry.prev = h(0xee);
        entry.hash = entry.compute_hash();
    });
    let err = verify_chain(&path).expect_err("tampered");
    assert_eq!(err.broken_seq(), Some(4), "{err}");
    assert!(matches!(
        err,
        AuditError::Broken {
            problem: ChainProblem::PrevMismatch { .. },
            ..
        }
    ));
}

#[test]
fn verify_names_a_missing_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chain(dir.path(), 5);
    remove(&path, 2);
    let err = verify_chain(&path).expect_err("gap");
    assert_eq!(err.broken_seq(), Some(2), "{err}");
    assert!(err.to_string().contains("next stored entry is seq 3"), "{err}");
}

#[test]
fn verify_notices_a_truncated_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = chain(dir.path(), 5);
    remove(&path, 5);
    let err = verify_chain(&path).expect_err("truncated");
    assert_eq!(err.broken_seq(), Some(5), "{err}");
    // The node itself also refuses to continue such a chain.
    assert_eq!(AuditLog::open(&path).err().and_then(|e| e.broken_seq()), Some(5));
}

#[test]
fn verify_fails_on_a_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = verify_chain(&dir.path().join(AUDIT_FILE)).expect_err("no file");
    assert!(matches!(err, AuditError::Store(_)), "{err}");
}

#[test]
fn chain_continues_after_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(AUDIT_FILE);
    let fourth;
    {
        let mut log = AuditLog::open(&path).expect("open");
        for i in 0..3 {
            log.append(i, h(1), h(2), 200);
        }
        assert_eq!(log.head(), 0);
        assert_eq!(log.commit().expect("commit").len(), 3);
        assert_eq!(log.head(), 3);
        // Pending at drop: committed by Drop.
        fourth = log.append(3, h(1), h(2), 201);
        assert_eq!(log.head_hash(), log.verify().expect("valid").head_hash);
    }
    let mut log = AuditLog::open(&path).expect("reopen");
    assert_eq!(log.head(), 4);
    let entry = log.append(4, h(3), h(4), 200);
    assert_eq!(entry.seq, 5);
    assert_eq!(entry.prev, fourth.hash);
    let committed = log.commit().expect("commit");
    assert_eq!(committed, vec![entry]);
    assert_eq!(log.verify().expect("valid").entries, 5);
    drop(log);
    assert_eq!(verify_chain(&path).expect("valid").head, 5);
}

#[test]
fn event_seq_reservations_never_go_backwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(AUDIT_FILE);
    let mut log = AuditLog::open(&path).expect("open");
    assert_eq!(log.reserve_event_seqs(100, 10).expect("reserve"), 100);
    assert_eq!(log.reserve_event_seqs(5, 10).expect("reserve"), 110);
    drop(log);
    let mut log = AuditLog::open(&path).expect("reopen");
    assert_eq!(log.reserve_event_seqs(0, 10).expect("reserve"), 120);
    assert_eq!(log.reserve_event_seqs(1_000, 10).expect("reserve"), 1_000);
}
