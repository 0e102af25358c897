//! The state tree against its definition: incremental roots equal roots computed from
//! scratch, the node table holds exactly the branching nodes (and the root entry), and
//! proofs verify only true claims. Real redb files in temp dirs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cmesh_common::hash::{keccak256, keccak256_parts, to_hex0x};
use cmesh_state::merkle::{self, MerkleError, NodeStore, Proof, ProofLeaf, Step, EMPTY_ROOT};
use cmesh_state::node_cache::NodeCache;
use cmesh_state::tables::{KV, NODES};
use proptest::prelude::*;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table};
use tempfile::TempDir;

type Pairs = BTreeMap<[u8; 32], Vec<u8>>;
type Bytes = &'static [u8];
/// Node entries of one context: prefix(32) ++ crit(1) → the two encoded children.
type NodeEntries = BTreeMap<Vec<u8>, Vec<u8>>;

struct Store {
    _dir: TempDir,
    db: Database,
}

fn store() -> Store {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::create(dir.path().join("state.redb")).expect("create db");
    Store { _dir: dir, db }
}

// ---- the definition, written out independently of the implementation ----

fn spec_leaf(key: &[u8; 32], value: &[u8]) -> [u8; 32] {
    keccak256_parts(&[&[0x00], key, &keccak256(value)])
}

fn spec_node(crit: usize, left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    keccak256_parts(&[&[0x01, crit as u8], left, right])
}

fn spec_bit(key: &[u8; 32], index: usize) -> bool {
    key[index / 8] & (0x80 >> (index % 8)) != 0
}

/// `key` with bit `index` flipped.
fn flip(key: &[u8; 32], index: usize) -> [u8; 32] {
    let mut out = *key;
    out[index / 8] ^= 0x80 >> (index % 8);
    out
}

/// The first bit where some of `keys` (two or more, distinct) differ.
fn spec_crit(keys: &[&[u8; 32]]) -> usize {
    (0..256)
        .find(|&index| keys.iter().any(|key| spec_bit(key, index) != spec_bit(keys[0], index)))
        .expect("distinct keys differ somewhere")
}

/// `key`'s first `bits` bits, the rest zero.
fn spec_prefix(key: &[u8; 32], bits: usize) -> [u8; 32] {
    let mut prefix = [0u8; 32];
    for index in (0..bits).filter(|&index| spec_bit(key, index)) {
        prefix[index / 8] |= 0x80 >> (index % 8);
    }
    prefix
}

/// Hash and child encoding of the subtree holding `pairs` (one or more), adding its
/// branching nodes' entries to `nodes`.
fn spec_subtree(pairs: &[(&[u8; 32], &Vec<u8>)], nodes: &mut NodeEntries) -> ([u8; 32], Vec<u8>) {
    if let [(key, value)] = pairs {
        let hash = spec_leaf(key, value);
        return (hash, [&[0, 0][..], &hash, &key[..]].concat());
    }
    let keys: Vec<&[u8; 32]> = pairs.iter().map(|(key, _)| *key).collect();
    let crit = spec_crit(&keys);
    let (left, right): (Vec<_>, Vec<_>) = pairs.iter().partition(|(key, _)| !spec_bit(key, crit));
    let (left_hash, left_child) = spec_subtree(&left, nodes);
    let (right_hash, right_child) = spec_subtree(&right, nodes);
    let hash = spec_node(crit, &left_hash, &right_hash);
    let prefix = spec_prefix(keys[0], crit);
    nodes.insert(
        [&prefix[..], &[crit as u8]].concat(),
        [left_child, right_child].concat(),
    );
    (hash, [&[1, crit as u8][..], &hash, &prefix].concat())
}

/// Root of `pairs`, the root entry (`None` when empty) and every node entry.
fn spec_tree(pairs: &Pairs) -> ([u8; 32], Option<Vec<u8>>, NodeEntries) {
    let pairs: Vec<_> = pairs.iter().collect();
    let mut nodes = NodeEntries::new();
    if pairs.is_empty() {
        return ([0; 32], None, nodes);
    }
    let (root, top) = spec_subtree(&pairs, &mut nodes);
    (root, Some(top), nodes)
}

// ---- reading the tables ----

/// The context's NODES entries: its root entry, and its node entries as
/// (prefix ++ crit) → value, checking the key layout.
fn stored_tree(nodes: &impl ReadableTable<Bytes, Bytes>, context: &[u8; 32]) -> (Option<Vec<u8>>, NodeEntries) {
    let mut high = context.to_vec();
    high.extend([0xffu8; 33]);
    let mut top = None;
    let mut out = NodeEntries::new();
    for entry in nodes
        .range::<&[u8]>(context.as_slice()..=high.as_slice())
        .expect("range")
    {
        let (key, value) = entry.expect("entry");
        let (key, value) = (key.value(), value.value());
        match key.len() {
            32 => top = Some(value.to_vec()),
            65 => {
                out.insert(key[32..].to_vec(), value.to_vec());
            }
            len => panic!("tree entry key of {len} bytes: neither a root nor a node entry"),
        }
    }
    (top, out)
}

fn stored_nodes(nodes: &impl ReadableTable<Bytes, Bytes>, context: &[u8; 32]) -> NodeEntries {
    stored_tree(nodes, context).1
}

/// Every entry of both tables whose context is not one of `skip`.
fn foreign_entries(
    kv: &Table<Bytes, Bytes>,
    nodes: &Table<Bytes, Bytes>,
    skip: &[[u8; 32]],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for table in [kv, nodes] {
        for entry in table.iter().expect("iter") {
            let (key, value) = entry.expect("entry");
            if !skip.iter().any(|context| key.value().starts_with(context)) {
                out.push((key.value().to_vec(), value.value().to_vec()));
            }
        }
    }
    out
}

fn context_kv_len(kv: &impl ReadableTable<Bytes, Bytes>, context: &[u8; 32]) -> usize {
    let mut high = context.to_vec();
    high.extend([0xffu8; 32]);
    kv.range::<&[u8]>(context.as_slice()..=high.as_slice())
        .expect("range")
        .count()
}

// ---- keys ----

fn with_last_byte(mut key: [u8; 32], last: u8) -> [u8; 32] {
    key[31] = last;
    key
}

fn with_first_byte(mut key: [u8; 32], first: u8) -> [u8; 32] {
    key[0] = first;
    key
}

/// Keys that collide and share long prefixes: pairs differing only in the last bit, keys
/// equal in their first 31 bytes, the extremes of the key space, and a few spread out.
fn pool() -> Vec<[u8; 32]> {
    let mut keys = vec![
        [0; 32],
        with_last_byte([0; 32], 1),
        [0x5a; 32],
        with_last_byte([0x5a; 32], 0x5b),
        with_last_byte([0x5a; 32], 0x00),
        with_last_byte([0x5a; 32], 0xff),
        [0xff; 32],
        with_last_byte([0xff; 32], 0xfe),
        with_first_byte([0; 32], 0x80),
        with_first_byte([0xff; 32], 0x7f),
    ];
    keys.extend((0u8..4).map(|i| keccak256(&[i])));
    keys
}

/// Two contexts adjacent in key order, so one's last key is next to the other's first.
const CONTEXTS: [[u8; 32]; 2] = [[0x11; 32], {
    let mut context = [0x11; 32];
    context[31] = 0x12;
    context
}];
/// Contexts just before and just after those two, which the tests must never touch.
const BYSTANDERS: [[u8; 32]; 2] = [
    {
        let mut context = [0x11; 32];
        context[31] = 0x10;
        context
    },
    {
        let mut context = [0x11; 32];
        context[31] = 0x13;
        context
    },
];

// ---- checking one context ----

/// What the definition says about a set of pairs: its root, its stored entries, its proofs.
struct Reference {
    pairs: Pairs,
    root: [u8; 32],
    top: Option<Vec<u8>>,
    nodes: NodeEntries,
}

impl Reference {
    fn new(pairs: Pairs) -> Self {
        let (root, top, nodes) = spec_tree(&pairs);
        Reference {
            pairs,
            root,
            top,
            nodes,
        }
    }

    fn get(&self, key: &[u8; 32]) -> Option<&[u8]> {
        self.pairs.get(key).map(Vec::as_slice)
    }

    /// The proof the definition gives for `key`: down the side of the key's bit at each
    /// branching node while the key agrees with the node's keys before its crit, down the
    /// left side once it does not, to a leaf.
    fn proof(&self, key: &[u8; 32]) -> Proof {
        let mut pairs: Vec<_> = self.pairs.iter().collect();
        if pairs.is_empty() {
            return Proof {
                steps: vec![],
                end: None,
            };
        }
        let mut steps = Vec::new();
        while pairs.len() > 1 {
            let keys: Vec<&[u8; 32]> = pairs.iter().map(|(key, _)| *key).collect();
            let crit = spec_crit(&keys);
            let inside = spec_prefix(key, crit) == spec_prefix(keys[0], crit);
            let side = inside && spec_bit(key, crit);
            let (on, off): (Vec<_>, Vec<_>) = pairs.iter().partition(|(key, _)| spec_bit(key, crit) == side);
            steps.push(Step {
                crit: crit as u8,
                sibling: spec_subtree(&off, &mut NodeEntries::new()).0,
            });
            pairs = on;
        }
        let (found, value) = pairs[0];
        Proof {
            steps,
            end: Some(ProofLeaf {
                key: *found,
                value_hash: keccak256(value),
            }),
        }
    }
}

/// Root, root entry, node entries and pair count of `context` against the reference.
fn check_tree(
    kv: &impl ReadableTable<Bytes, Bytes>,
    nodes: &impl ReadableTable<Bytes, Bytes>,
    context: &[u8; 32],
    reference: &Reference,
) -> Result<(), TestCaseError> {
    let root = merkle::root(nodes, context).map_err(fail)?;
    prop_assert_eq!(to_hex0x(&root), to_hex0x(&reference.root));
    let (top, stored) = stored_tree(nodes, context);
    prop_assert_eq!(&top, &reference.top);
    // Exactly the branching nodes: the same (crit, prefix) set, each with its children.
    prop_assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        reference.nodes.keys().collect::<Vec<_>>()
    );
    prop_assert_eq!(&stored, &reference.nodes);
    prop_assert_eq!(stored.len(), reference.pairs.len().saturating_sub(1));
    prop_assert_eq!(context_kv_len(kv, context), reference.pairs.len());
    Ok(())
}

/// The proof of `key` is the one the definition gives.
fn check_proof(
    kv: &impl ReadableTable<Bytes, Bytes>,
    nodes: &impl ReadableTable<Bytes, Bytes>,
    context: &[u8; 32],
    reference: &Reference,
    key: &[u8; 32],
) -> Result<Proof, TestCaseError> {
    let proof = merkle::prove(kv, nodes, context, key).map_err(fail)?;
    prop_assert_eq!(&proof, &reference.proof(key), "proof of {}", to_hex0x(key));
    Ok(proof)
}

/// A claim about `key` that is false under `reference`.
fn false_claim(reference: &Reference, key: &[u8; 32]) -> Option<Vec<u8>> {
    match reference.get(key) {
        Some(value) => Some([value, b"!"].concat()),
        None => Some(Vec::new()),
    }
}

fn fail(err: MerkleError) -> TestCaseError {
    TestCaseError::fail(err.to_string())
}

#[derive(Debug, Clone)]
struct Op {
    context: usize,
    key: usize,
    value: Option<Vec<u8>>,
    /// Another key whose proof is checked after this step.
    probe: usize,
}

fn op() -> impl Strategy<Value = Op> {
    let value = prop_oneof![
        Just(Vec::new()),
        Just(b"same".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    let keys = pool().len();
    (
        0..CONTEXTS.len(),
        0..keys,
        proptest::option::weighted(0.65, value),
        0..keys,
    )
        .prop_map(|(context, key, value, probe)| Op {
            context,
            key,
            value,
            probe,
        })
}

/// Cases to run: `PROPTEST_CASES` if set, else a number that keeps a debug run short.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// After every step: `set` returns the root of the model computed from scratch, each
    /// context's root entry and node entries are exactly the model's (so nothing stale
    /// stays after removals), the proofs of the touched key and of another key are the
    /// ones the definition gives, and the touched key's proof verifies. At the end,
    /// through a read transaction: the same for every key; then clearing one context
    /// empties it and leaves everything else alone. (Proofs against false claims, wrong
    /// roots and tampering: `proofs_verify_only_true_claims`.)
    #[test]
    fn incremental_tree_matches_the_definition(ops in proptest::collection::vec(op(), 1..32)) {
        let keys = pool();
        let store = store();
        let mut models = [Reference::new(Pairs::new()), Reference::new(Pairs::new())];

        let txn = store.db.begin_write().expect("write txn");
        let foreign_before = {
            let mut kv = txn.open_table(KV).expect("kv");
            let mut nodes = txn.open_table(NODES).expect("nodes");
            // Bystander contexts hold keys at the very edges of the key space, right next to
            // the contexts under test, and must come out untouched.
            for (index, context) in BYSTANDERS.iter().enumerate() {
                for key in [[0; 32], [0xff; 32], keys[10]] {
                    merkle::set(&mut kv, &mut nodes, context, &key, Some(&[index as u8])).map_err(fail)?;
                }
            }
            let before = foreign_entries(&kv, &nodes, &CONTEXTS);

            for op in &ops {
                let context = &CONTEXTS[op.context];
                let key = &keys[op.key];
                let root = merkle::set(&mut kv, &mut nodes, context, key, op.value.as_deref()).map_err(fail)?;
                let mut pairs = std::mem::take(&mut models[op.context].pairs);
                match &op.value {
                    Some(value) => pairs.insert(*key, value.clone()),
                    None => pairs.remove(key),
                };
                let model = Reference::new(pairs);
                prop_assert_eq!(to_hex0x(&root), to_hex0x(&model.root));
                models[op.context] = model;
                for (context, model) in CONTEXTS.iter().zip(&models) {
                    check_tree(&kv, &nodes, context, model)?;
                }
                let model = &models[op.context];
                check_proof(&kv, &nodes, context, model, &keys[op.probe])?;
                let proof = check_proof(&kv, &nodes, context, model, key)?;
                prop_assert!(proof.verify(&model.root, key, model.get(key)));
            }
            prop_assert_eq!(&foreign_entries(&kv, &nodes, &CONTEXTS), &before);
            before
        };
        txn.commit().expect("commit");

        let read = store.db.begin_read().expect("read txn");
        let (kv, nodes) = (read.open_table(KV).expect("kv"), read.open_table(NODES).expect("nodes"));
        for (context, model) in CONTEXTS.iter().zip(&models) {
            prop_assert_eq!(merkle::root_of(&model.pairs), model.root);
            check_tree(&kv, &nodes, context, model)?;
            for key in &keys {
                check_proof(&kv, &nodes, context, model, key)?;
            }
        }
        drop((kv, nodes, read));

        let txn = store.db.begin_write().expect("write txn");
        {
            let mut kv = txn.open_table(KV).expect("kv");
            let mut nodes = txn.open_table(NODES).expect("nodes");
            merkle::clear(&mut kv, &mut nodes, &CONTEXTS[0]).map_err(fail)?;
            let empty = Reference::new(Pairs::new());
            check_tree(&kv, &nodes, &CONTEXTS[0], &empty)?;
            prop_assert_eq!(merkle::root(&nodes, &CONTEXTS[0]).map_err(fail)?, EMPTY_ROOT);
            for key in &keys[..3] {
                check_proof(&kv, &nodes, &CONTEXTS[0], &empty, key)?;
            }
            check_tree(&kv, &nodes, &CONTEXTS[1], &models[1])?;
            prop_assert_eq!(&foreign_entries(&kv, &nodes, &CONTEXTS), &foreign_before);
        }
        txn.commit().expect("commit");
    }
}

/// One step of a run through the node cache.
#[derive(Debug, Clone)]
enum Action {
    Set {
        context: usize,
        key: usize,
        value: Option<Vec<u8>>,
    },
    Clear {
        context: usize,
    },
    /// Writes the cache's changes to the table in the middle of a transaction.
    Flush,
    /// Flushes and commits; the next transaction keeps the cache.
    Commit,
    /// Aborts the transaction (perhaps after flushes) and drops the cache.
    Abort,
}

/// The pool, and keys spread out at random: trees deep enough for paths to share nodes.
fn wide_pool() -> Vec<[u8; 32]> {
    let mut keys = pool();
    keys.extend((100u32..120).map(|i| keccak256(&i.to_le_bytes())));
    keys
}

fn action() -> impl Strategy<Value = Action> {
    let value = prop_oneof![
        Just(Vec::new()),
        Just(b"same".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    let set = (
        0..CONTEXTS.len(),
        0..wide_pool().len(),
        proptest::option::weighted(0.7, value),
    )
        .prop_map(|(context, key, value)| Action::Set { context, key, value });
    prop_oneof![
        40 => set,
        1 => (0..CONTEXTS.len()).prop_map(|context| Action::Clear { context }),
        4 => Just(Action::Flush),
        4 => Just(Action::Commit),
        2 => Just(Action::Abort),
    ]
}

/// Pairs of the [`BYSTANDERS`] contexts, at the edges of the key space.
fn write_bystanders(kv: &mut Table<Bytes, Bytes>, nodes: &mut impl NodeStore) -> Result<(), MerkleError> {
    let keys = wide_pool();
    for (index, context) in BYSTANDERS.iter().enumerate() {
        for key in [[0; 32], [0xff; 32], keys[10], keys[20]] {
            merkle::set(kv, nodes, context, &key, Some(&[index as u8]))?;
        }
    }
    Ok(())
}

/// Every entry of the pair and node tables, as committed.
fn committed_entries(db: &Database) -> Vec<(Vec<u8>, Vec<u8>)> {
    let read = db.begin_read().expect("read txn");
    let mut out = Vec::new();
    for table in [KV, NODES] {
        let table = read.open_table(table).expect("table");
        for entry in table.iter().expect("iter") {
            let (key, value) = entry.expect("entry");
            out.push((key.value().to_vec(), value.value().to_vec()));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// The same sets, removes and clears, applied to one store directly and to another
    /// through a node cache kept across transactions (flushed at random points, trimmed to
    /// a small limit, dropped when a transaction is aborted): every set returns the same
    /// root, the definition's, and after each commit both stores hold byte-identical
    /// tables, the tree being the definition's.
    #[test]
    fn the_node_cache_changes_nothing(actions in proptest::collection::vec(action(), 1..120), limit in 0usize..48) {
        let keys = wide_pool();
        let (direct, cached) = (store(), store());
        let mut cache = NodeCache::new(limit);

        // Bystander contexts, next to the ones under test, which clears must leave alone.
        let txn = direct.db.begin_write().expect("write txn");
        {
            let mut kv = txn.open_table(KV).expect("kv");
            let mut nodes = txn.open_table(NODES).expect("nodes");
            write_bystanders(&mut kv, &mut nodes).map_err(fail)?;
        }
        txn.commit().expect("commit");
        let txn = cached.db.begin_write().expect("write txn");
        {
            let mut kv = txn.open_table(KV).expect("kv");
            let mut nodes = cache.over(txn.open_table(NODES).expect("nodes"));
            write_bystanders(&mut kv, &mut nodes).map_err(fail)?;
            nodes.flush().map_err(fail)?;
        }
        txn.commit().expect("commit");
        prop_assert_eq!(committed_entries(&direct.db), committed_entries(&cached.db));

        // The pairs of each context as of the last commit, and as of now.
        let mut committed = [Pairs::new(), Pairs::new()];
        let mut models = committed.clone();
        let mut actions = actions.into_iter().peekable();
        while actions.peek().is_some() {
            let (direct_txn, cached_txn) = (
                direct.db.begin_write().expect("write txn"),
                cached.db.begin_write().expect("write txn"),
            );
            cache.trim();
            let commit = {
                let mut direct_kv = direct_txn.open_table(KV).expect("kv");
                let mut direct_nodes = direct_txn.open_table(NODES).expect("nodes");
                let mut cached_kv = cached_txn.open_table(KV).expect("kv");
                let mut cached_nodes = cache.over(cached_txn.open_table(NODES).expect("nodes"));
                let commit = loop {
                    match actions.next() {
                        None | Some(Action::Commit) => break true,
                        Some(Action::Abort) => break false,
                        Some(Action::Flush) => cached_nodes.flush().map_err(fail)?,
                        Some(Action::Clear { context }) => {
                            merkle::clear(&mut direct_kv, &mut direct_nodes, &CONTEXTS[context]).map_err(fail)?;
                            merkle::clear(&mut cached_kv, &mut cached_nodes, &CONTEXTS[context]).map_err(fail)?;
                            models[context].clear();
                        }
                        Some(Action::Set { context, key, value }) => {
                            let (context_id, key_bytes) = (&CONTEXTS[context], &keys[key]);
                            let direct_root =
                                merkle::set(&mut direct_kv, &mut direct_nodes, context_id, key_bytes, value.as_deref())
                                    .map_err(fail)?;
                            let cached_root =
                                merkle::set(&mut cached_kv, &mut cached_nodes, context_id, key_bytes, value.as_deref())
                                    .map_err(fail)?;
                            match value {
                                Some(value) => models[context].insert(*key_bytes, value),
                                None => models[context].remove(key_bytes),
                            };
                            prop_assert_eq!(to_hex0x(&cached_root), to_hex0x(&direct_root));
                            prop_assert_eq!(to_hex0x(&cached_root), to_hex0x(&merkle::root_of(&models[context])));
                        }
                    }
                };
                if commit {
                    cached_nodes.flush().map_err(fail)?;
                }
                commit
            };
            if commit {
                direct_txn.commit().expect("commit");
                cached_txn.commit().expect("commit");
                committed = models.clone();
            } else {
                direct_txn.abort().expect("abort");
                cached_txn.abort().expect("abort");
                cache = NodeCache::new(limit);
                models = committed.clone();
            }
            prop_assert_eq!(committed_entries(&direct.db), committed_entries(&cached.db));
            let read = cached.db.begin_read().expect("read txn");
            let (kv, nodes) = (read.open_table(KV).expect("kv"), read.open_table(NODES).expect("nodes"));
            for (context, pairs) in CONTEXTS.iter().zip(&committed) {
                check_tree(&kv, &nodes, context, &Reference::new(pairs.clone()))?;
            }
        }
    }
}

/// One write of [`deferred_hashing_changes_nothing`]: context, key, value (`None`:
/// remove), and whether the tree is refreshed after it.
type DeferredWrite = (usize, usize, Option<Vec<u8>>, bool);

fn deferred_write() -> impl Strategy<Value = DeferredWrite> {
    (
        0..CONTEXTS.len(),
        0..wide_pool().len(),
        proptest::option::weighted(0.7, proptest::collection::vec(any::<u8>(), 0..6)),
        proptest::bool::weighted(0.2),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Writes whose hashing waits (through the node cache, refreshed at random points, as
    /// the executor does for a batch) give the definition's root at every refresh, and
    /// leave tables byte-identical to those of the same writes hashed one by one.
    #[test]
    fn deferred_hashing_changes_nothing(writes in proptest::collection::vec(deferred_write(), 1..120)) {
        let keys = wide_pool();
        let (eager, deferred) = (store(), store());
        let mut cache = NodeCache::new(usize::MAX);
        let mut models = [Pairs::new(), Pairs::new()];
        let (eager_txn, deferred_txn) = (
            eager.db.begin_write().expect("write txn"),
            deferred.db.begin_write().expect("write txn"),
        );
        {
            let mut eager_kv = eager_txn.open_table(KV).expect("kv");
            let mut eager_nodes = eager_txn.open_table(NODES).expect("nodes");
            let mut kv = deferred_txn.open_table(KV).expect("kv");
            let mut nodes = cache.over(deferred_txn.open_table(NODES).expect("nodes"));
            for (context, key, value, refresh) in writes {
                let (context_id, key) = (&CONTEXTS[context], &keys[key]);
                merkle::set(&mut eager_kv, &mut eager_nodes, context_id, key, value.as_deref()).map_err(fail)?;
                merkle::write(&mut kv, &mut nodes, context_id, key, value.as_deref()).map_err(fail)?;
                match value {
                    Some(value) => models[context].insert(*key, value),
                    None => models[context].remove(key),
                };
                if refresh {
                    let root = merkle::refresh(&mut nodes, context_id).map_err(fail)?;
                    prop_assert_eq!(to_hex0x(&root), to_hex0x(&merkle::root_of(&models[context])));
                }
            }
            for (context, model) in CONTEXTS.iter().zip(&models) {
                let root = merkle::refresh(&mut nodes, context).map_err(fail)?;
                prop_assert_eq!(to_hex0x(&root), to_hex0x(&merkle::root_of(model)));
            }
            nodes.flush().map_err(fail)?;
        }
        eager_txn.commit().expect("commit");
        deferred_txn.commit().expect("commit");
        prop_assert_eq!(committed_entries(&eager.db), committed_entries(&deferred.db));
    }
}

/// A tree written but not refreshed cannot be stored: the flush refuses it and the
/// store keeps what it had. Refreshed, the same changes are stored.
#[test]
fn a_tree_not_hashed_is_never_stored() {
    let keys = wide_pool();
    let context = CONTEXTS[0];
    let store = store();
    let mut cache = NodeCache::new(usize::MAX);
    let txn = store.db.begin_write().expect("write txn");
    let root = {
        let mut kv = txn.open_table(KV).expect("kv");
        let mut nodes = cache.over(txn.open_table(NODES).expect("nodes"));
        merkle::set(&mut kv, &mut nodes, &context, &keys[0], Some(b"a")).expect("set");
        let root = merkle::set(&mut kv, &mut nodes, &context, &keys[1], Some(b"b")).expect("set");
        nodes.flush().expect("flush");
        root
    };
    txn.commit().expect("commit");
    let before = committed_entries(&store.db);

    let txn = store.db.begin_write().expect("write txn");
    {
        let mut kv = txn.open_table(KV).expect("kv");
        let mut nodes = cache.over(txn.open_table(NODES).expect("nodes"));
        merkle::write(&mut kv, &mut nodes, &context, &keys[2], Some(b"c")).expect("write");
        let err = nodes.flush().expect_err("a stale entry was stored");
        assert!(matches!(err, MerkleError::StaleEntry), "{err}");
    }
    txn.abort().expect("abort");
    assert_eq!(committed_entries(&store.db), before);
    let read = store.db.begin_read().expect("read txn");
    assert_eq!(
        merkle::root(&read.open_table(NODES).expect("nodes"), &context).expect("root"),
        root
    );

    let mut cache = NodeCache::new(usize::MAX);
    let txn = store.db.begin_write().expect("write txn");
    {
        let mut kv = txn.open_table(KV).expect("kv");
        let mut nodes = cache.over(txn.open_table(NODES).expect("nodes"));
        merkle::write(&mut kv, &mut nodes, &context, &keys[2], Some(b"c")).expect("write");
        let root = merkle::refresh(&mut nodes, &context).expect("refresh");
        let expected: Pairs = [
            (keys[0], b"a".to_vec()),
            (keys[1], b"b".to_vec()),
            (keys[2], b"c".to_vec()),
        ]
        .into();
        assert_eq!(root, merkle::root_of(&expected));
        nodes.flush().expect("flush");
    }
    txn.commit().expect("commit");
}

/// Proofs verify exactly the true claims: the right value (or absence) under the right
/// root, and nothing else — not a wrong value, a wrong presence, a wrong root, a tampered
/// path, nor a claim about another key that is false. (A proof legitimately shows the
/// absence of every key whose position is inside the leaf or node the path ends at or
/// leaves: that is checked bit by bit below.)
#[test]
fn proofs_verify_only_true_claims() {
    let keys = pool();
    let states: Vec<Pairs> = vec![
        Pairs::new(),
        Pairs::from([(keys[3], b"only".to_vec())]),
        // One of each close pair: absence proofs end in the other leaf, deep down.
        keys.iter().step_by(2).map(|key| (*key, key[..1].to_vec())).collect(),
        keys.iter().map(|key| (*key, key[30..].to_vec())).collect(),
    ];
    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    let mut kv = txn.open_table(KV).expect("kv");
    let mut nodes = txn.open_table(NODES).expect("nodes");
    // Proofs seen: of an empty tree, of a present key, of an absent key.
    let mut kinds = [0usize; 3];
    for (index, pairs) in states.into_iter().enumerate() {
        let context = [0x70 + index as u8; 32];
        for (key, value) in &pairs {
            merkle::set(&mut kv, &mut nodes, &context, key, Some(value)).expect("set");
        }
        let reference = Reference::new(pairs);
        let root = merkle::root(&nodes, &context).expect("root");
        assert_eq!(root, reference.root);
        let mut wrong_root = root;
        wrong_root[31] ^= 1;
        for (position, key) in keys.iter().enumerate() {
            let proof = check_proof(&kv, &nodes, &context, &reference, key).expect("proof");
            let truth = reference.get(key);
            kinds[match (&proof.end, truth) {
                (None, _) => 0,
                (Some(_), Some(_)) => 1,
                (Some(_), None) => 2,
            }] += 1;
            assert!(proof.verify(&root, key, truth), "state {index}, key {position}");
            assert!(!proof.verify(&wrong_root, key, truth));
            assert!(!proof.verify(&root, key, false_claim(&reference, key).as_deref()));
            match truth {
                Some(value) => {
                    // A present key claimed absent, or with another value.
                    assert!(!proof.verify(&root, key, None));
                    assert!(!proof.verify(&root, key, Some(&value[1..])));
                }
                // An absent key claimed present.
                None => assert!(!proof.verify(&root, key, Some(b"x"))),
            }
            for step in [1, 2, 7] {
                let other = &keys[(position + step) % keys.len()];
                for claim in [
                    truth,
                    None,
                    reference.get(other),
                    false_claim(&reference, other).as_deref(),
                ] {
                    if proof.verify(&root, other, claim) {
                        assert_eq!(claim, reference.get(other), "false claim verified");
                    }
                }
            }
            check_tampering(&proof, &root, key, truth);
            let Some(end) = &proof.end else { continue };
            // The absence of a key that parts from the end leaf at bit `b` is shown exactly
            // when no step has crit `b`: then its position is inside the path's end or in a
            // node the path goes through on the other side of a greater crit.
            let crits: Vec<usize> = proof.steps.iter().map(|step| usize::from(step.crit)).collect();
            for parted in 0..256 {
                let near = flip(&end.key, parted);
                let shown = proof.verify(&root, &near, None);
                assert_eq!(shown, !crits.contains(&parted), "bit {parted} of {crits:?}");
                if shown {
                    assert_eq!(reference.get(&near), None);
                }
            }
            // The other leaf of an absence proof does not prove its own absence, and can't
            // be passed off as the key.
            if truth.is_none() {
                assert!(!proof.verify(&root, &end.key, None));
                let mut swapped = proof.clone();
                swapped.end = Some(ProofLeaf {
                    key: *key,
                    value_hash: end.value_hash,
                });
                assert!(!swapped.verify(&root, key, None));
                assert!(!swapped.verify(&root, key, Some(b"x")));
            }
        }
    }
    assert!(
        kinds.iter().all(|count| *count > 0),
        "every kind of proof was seen: {kinds:?}"
    );
}

/// Every change to a valid proof's path makes it fail for the same claim.
fn check_tampering(proof: &Proof, root: &[u8; 32], key: &[u8; 32], truth: Option<&[u8]>) {
    let mut longer = proof.clone();
    longer.steps.push(Step {
        crit: 255,
        sibling: [0; 32],
    });
    assert!(!longer.verify(root, key, truth), "extra step");
    if proof.end.is_some() {
        let mut no_end = proof.clone();
        no_end.end = None;
        assert!(!no_end.verify(root, key, truth), "end dropped");
    }
    for index in 0..proof.steps.len() {
        let mut flipped = proof.clone();
        flipped.steps[index].sibling[0] ^= 1;
        assert!(!flipped.verify(root, key, truth), "flipped sibling {index}");
        for crit in [proof.steps[index].crit ^ 1, proof.steps[index].crit.wrapping_add(8)] {
            let mut moved = proof.clone();
            moved.steps[index].crit = crit;
            assert!(
                !moved.verify(root, key, truth),
                "crit of step {index} changed to {crit}"
            );
        }
        let mut shorter = proof.clone();
        shorter.steps.remove(index);
        assert!(!shorter.verify(root, key, truth), "step {index} dropped");
        if index > 0 {
            let mut swapped = proof.clone();
            swapped.steps.swap(index - 1, index);
            assert!(!swapped.verify(root, key, truth), "steps {index} and before swapped");
        }
    }
    if proof.steps.len() > 2 {
        let mut reversed = proof.clone();
        reversed.steps.reverse();
        assert!(!reversed.verify(root, key, truth), "steps reversed");
    }
    if let Some(end) = &proof.end {
        let mut other_value = proof.clone();
        other_value.end = Some(ProofLeaf {
            key: end.key,
            value_hash: keccak256(&end.value_hash),
        });
        assert!(!other_value.verify(root, key, truth), "end value hash changed");
    }
}

/// The path's hashes depend only on the end leaf, so a proof's hashes also fit any key
/// that parts from the leaf at a step's crit; that key would be in the unopened sibling,
/// so such a proof shows nothing about it.
#[test]
fn a_proof_says_nothing_about_the_sibling_it_does_not_open() {
    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    let mut kv = txn.open_table(KV).expect("kv");
    let mut nodes = txn.open_table(NODES).expect("nodes");
    let context = [0x21; 32];
    let (a, b) = ([0u8; 32], with_first_byte([0; 32], 0x80));
    merkle::set(&mut kv, &mut nodes, &context, &a, Some(b"a")).expect("set");
    let root = merkle::set(&mut kv, &mut nodes, &context, &b, Some(b"b")).expect("set");
    let proof = merkle::prove(&kv, &nodes, &context, &a).expect("prove");
    assert_eq!(
        proof,
        Proof {
            steps: vec![Step {
                crit: 0,
                sibling: spec_leaf(&b, b"b")
            }],
            end: Some(ProofLeaf {
                key: a,
                value_hash: keccak256(b"a")
            }),
        }
    );
    assert!(proof.verify(&root, &a, Some(b"a")));
    // `b` is present, and an absent `c0…` is in the same subtree: a's proof shows neither.
    let c = with_first_byte([0; 32], 0xc0);
    assert!(!proof.verify(&root, &b, None));
    assert!(!proof.verify(&root, &c, None));
    // `40…` parts from `a` at bit 1, below the only crit: its position holds a's leaf.
    assert!(proof.verify(&root, &with_first_byte([0; 32], 0x40), None));
    // c's own proof ends at b's leaf and shows its absence.
    let proof = merkle::prove(&kv, &nodes, &context, &c).expect("prove");
    assert_eq!(proof.end.as_ref().map(|end| end.key), Some(b));
    assert!(proof.verify(&root, &c, None));
}

// ---- fixed cases ----

fn key_from(bytes: &[(usize, u8)]) -> [u8; 32] {
    let mut key = [0u8; 32];
    for &(index, byte) in bytes {
        key[index] = byte;
    }
    key
}

/// The test vector of docs/STATE_ROOT.md.
fn vector() -> Vec<([u8; 32], &'static [u8])> {
    vec![
        (key_from(&[]), b"a"),
        (key_from(&[(31, 0x01)]), b"b"),
        (key_from(&[(0, 0x80)]), b""),
        (key_from(&[(0, 0x40)]), b"cmesh"),
    ]
}

/// Root of the vector's first two pairs. Both roots were also computed by an independent
/// implementation of the definition (Python, own Keccak), and the two-pair one by hand:
/// keccak256(01 ‖ ff ‖ keccak256(00 ‖ k1 ‖ keccak256("a")) ‖ keccak256(00 ‖ k2 ‖ keccak256("b"))).
const VECTOR_TWO_ROOT: &str = "0x023ece283500e459da60888cf4960f2d9f64f7c69ad7090b94d1b3f9df3a6aba";
/// Root of the whole vector.
const VECTOR_ROOT: &str = "0xebd2ef0d2d585f8b0f6155d72ca7eb72687c9e580c58a994ff710c7e901487ed";

#[test]
fn fixed_vector() {
    let pairs = vector();
    let [(k1, v1), (k2, v2), (k3, v3), (k4, v4)] = pairs[..] else {
        unreachable!()
    };
    // k1 and k2 differ only in the last bit: one node at crit 255 holds both; k4 parts
    // from them at bit 1 and k3 from all three at bit 0.
    let two = keccak256_parts(&[
        &[0x01, 0xff],
        &keccak256_parts(&[&[0x00], &k1, &keccak256(v1)]),
        &keccak256_parts(&[&[0x00], &k2, &keccak256(v2)]),
    ]);
    assert_eq!(to_hex0x(&two), VECTOR_TWO_ROOT);
    let low = spec_node(1, &two, &spec_leaf(&k4, v4));
    let expected = spec_node(0, &low, &spec_leaf(&k3, v3));
    assert_eq!(to_hex0x(&expected), VECTOR_ROOT);

    let model: Pairs = pairs.iter().map(|(key, value)| (*key, value.to_vec())).collect();
    assert_eq!(merkle::root_of(&model), expected);
    assert_eq!(merkle::root_of(&model.clone().into_iter().take(2).collect()), two);

    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    {
        let mut kv = txn.open_table(KV).expect("kv");
        let mut nodes = txn.open_table(NODES).expect("nodes");
        let context = [0xc0; 32];
        let mut roots = Vec::new();
        for (key, value) in &pairs {
            roots.push(merkle::set(&mut kv, &mut nodes, &context, key, Some(value)).expect("set"));
        }
        assert_eq!(to_hex0x(&roots[1]), VECTOR_TWO_ROOT);
        let root = roots[3];
        assert_eq!(to_hex0x(&root), VECTOR_ROOT);
        // Three branching nodes: crits 0, 1 and 255.
        let stored = stored_nodes(&nodes, &context);
        let mut crits: Vec<u8> = stored.keys().map(|node| node[32]).collect();
        crits.sort_unstable();
        assert_eq!(crits, vec![0, 1, 255]);
        let proof = merkle::prove(&kv, &nodes, &context, &k2).expect("prove");
        assert_eq!(
            proof.steps,
            vec![
                Step {
                    crit: 0,
                    sibling: spec_leaf(&k3, v3)
                },
                Step {
                    crit: 1,
                    sibling: spec_leaf(&k4, v4)
                },
                Step {
                    crit: 255,
                    sibling: spec_leaf(&k1, v1)
                },
            ]
        );
        assert!(proof.verify(&root, &k2, Some(v2)));
        let proof = merkle::prove(&kv, &nodes, &context, &k3).expect("prove");
        assert_eq!(proof.steps, vec![Step { crit: 0, sibling: low }]);
        assert!(proof.verify(&root, &k3, Some(b"")));
    }
    txn.commit().expect("commit");
}

/// A deterministic stand-in for a shuffle.
fn scrambled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut items = items.to_vec();
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (state >> 33) as usize % (i + 1));
    }
    items
}

#[test]
fn insertion_order_does_not_matter() {
    let mut pairs: Vec<([u8; 32], Vec<u8>)> = (0u32..300)
        .map(|i| (keccak256(&i.to_be_bytes()), i.to_le_bytes().to_vec()))
        .collect();
    pairs.extend(pool().into_iter().map(|key| (key, key[..3].to_vec())));
    let model: Pairs = pairs.iter().cloned().collect();
    let expected = merkle::root_of(&model);
    let extra: Vec<[u8; 32]> = (0u32..50).map(|i| keccak256(&(i + 1000).to_be_bytes())).collect();

    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    let mut kv = txn.open_table(KV).expect("kv");
    let mut nodes = txn.open_table(NODES).expect("nodes");
    let mut trees = Vec::new();
    for seed in 0u8..4 {
        let context = [seed; 32];
        let order = match seed {
            0 => pairs.clone(),
            1 => pairs.iter().rev().cloned().collect(),
            _ => scrambled(&pairs, u64::from(seed)),
        };
        for (index, (key, value)) in order.iter().enumerate() {
            // The last order also writes other values and keys that it then takes back.
            if seed == 3 {
                merkle::set(&mut kv, &mut nodes, &context, key, Some(b"first")).expect("set");
                if let Some(extra) = extra.get(index) {
                    merkle::set(&mut kv, &mut nodes, &context, extra, Some(b"extra")).expect("set");
                }
            }
            merkle::set(&mut kv, &mut nodes, &context, key, Some(value)).expect("set");
        }
        if seed == 3 {
            for key in &extra {
                merkle::set(&mut kv, &mut nodes, &context, key, None).expect("remove");
            }
        }
        assert_eq!(merkle::root(&nodes, &context).expect("root"), expected, "order {seed}");
        trees.push(stored_tree(&nodes, &context));
    }
    assert!(trees.windows(2).all(|pair| pair[0] == pair[1]));
    let (_, top, nodes) = spec_tree(&model);
    assert_eq!(trees[0], (top, nodes));
}

#[test]
fn keys_differing_in_the_last_bit_make_one_node() {
    let (a, b) = ([0x33; 32], with_last_byte([0x33; 32], 0x32));
    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    let mut kv = txn.open_table(KV).expect("kv");
    let mut nodes = txn.open_table(NODES).expect("nodes");
    let context = [9; 32];
    merkle::set(&mut kv, &mut nodes, &context, &a, Some(b"a")).expect("set");
    let (top, stored) = stored_tree(&nodes, &context);
    assert!(stored.is_empty(), "a single leaf needs no node");
    assert_eq!(top, Some([&[0, 0][..], &spec_leaf(&a, b"a"), &a].concat()));
    let root = merkle::set(&mut kv, &mut nodes, &context, &b, Some(b"b")).expect("set");
    assert_eq!(root, spec_node(255, &spec_leaf(&b, b"b"), &spec_leaf(&a, b"a")));
    let stored = stored_nodes(&nodes, &context);
    assert_eq!(
        stored.keys().cloned().collect::<Vec<_>>(),
        vec![[&b[..], &[255]].concat()]
    );
    for (key, value) in [(a, b"a"), (b, b"b")] {
        let proof = merkle::prove(&kv, &nodes, &context, &key).expect("prove");
        assert_eq!(proof.steps.len(), 1);
        assert!(proof.verify(&root, &key, Some(value)));
    }
    // Parts from both at bit 248, above the node: the proof runs down the node's left side.
    let absent = with_last_byte([0x33; 32], 0xb3);
    let proof = merkle::prove(&kv, &nodes, &context, &absent).expect("prove");
    assert_eq!(proof.steps.len(), 1);
    assert_eq!(proof.end.as_ref().map(|end| end.key), Some(b));
    assert!(proof.verify(&root, &absent, None));

    let root = merkle::set(&mut kv, &mut nodes, &context, &a, None).expect("remove");
    assert_eq!(root, spec_leaf(&b, b"b"));
    assert!(stored_nodes(&nodes, &context).is_empty(), "stale nodes after a removal");
    let proof = merkle::prove(&kv, &nodes, &context, &a).expect("prove");
    assert_eq!(
        proof,
        Proof {
            steps: vec![],
            end: Some(ProofLeaf {
                key: b,
                value_hash: keccak256(b"b")
            })
        }
    );
    assert!(proof.verify(&root, &a, None));
    // The other leaf does not prove the absence of the key it holds.
    assert!(!proof.verify(&root, &b, None));
}

/// Keys sharing their first 248 bits with a present key (the old per-bit tree re-hashed
/// ~249 levels for each) cost no more than others: one more branching node at crit 248,
/// so a write's path is as short as a random key's plus one.
#[test]
fn keys_sharing_248_bits_stay_cheap() {
    let originals: Vec<[u8; 32]> = (0u32..300).map(|i| keccak256(&i.to_le_bytes())).collect();
    let twins: Vec<[u8; 32]> = originals.iter().map(|key| with_last_byte(*key, !key[31])).collect();
    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    let mut kv = txn.open_table(KV).expect("kv");
    let mut nodes = txn.open_table(NODES).expect("nodes");
    let context = [0x24; 32];
    for key in &originals {
        merkle::set(&mut kv, &mut nodes, &context, key, Some(b"o")).expect("set");
    }
    let before: Vec<usize> = originals
        .iter()
        .map(|key| merkle::prove(&kv, &nodes, &context, key).expect("prove").steps.len())
        .collect();
    for key in &twins {
        merkle::set(&mut kv, &mut nodes, &context, key, Some(b"t")).expect("set");
    }
    assert_eq!(stored_nodes(&nodes, &context).len(), 2 * originals.len() - 1);
    let root = merkle::root(&nodes, &context).expect("root");
    for ((original, twin), depth) in originals.iter().zip(&twins).zip(&before) {
        for (key, value) in [(original, b"o"), (twin, b"t")] {
            let proof = merkle::prove(&kv, &nodes, &context, key).expect("prove");
            assert_eq!(proof.steps.len(), depth + 1);
            assert_eq!(proof.steps.last().map(|step| step.crit), Some(248));
            assert!(proof.verify(&root, key, Some(value)));
        }
    }
    assert!(
        before.iter().all(|depth| *depth <= 32),
        "random keys make short paths: {before:?}"
    );
}

#[test]
fn removing_everything_leaves_no_nodes() {
    let keys: Vec<[u8; 32]> = (0u32..500).map(|i| keccak256(&i.to_le_bytes())).collect();
    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    let mut kv = txn.open_table(KV).expect("kv");
    let mut nodes = txn.open_table(NODES).expect("nodes");
    let context = [5; 32];
    for key in &keys {
        merkle::set(&mut kv, &mut nodes, &context, key, Some(&key[..4])).expect("set");
    }
    let (top, stored) = stored_tree(&nodes, &context);
    assert!(top.is_some());
    assert_eq!(stored.len(), keys.len() - 1);
    let mut last = None;
    for key in scrambled(&keys, 7) {
        last = Some(merkle::set(&mut kv, &mut nodes, &context, &key, None).expect("remove"));
    }
    assert_eq!(last, Some(EMPTY_ROOT));
    assert_eq!(stored_tree(&nodes, &context), (None, NodeEntries::new()));
    assert_eq!(nodes.len().expect("len"), 0);
    assert_eq!(kv.len().expect("len"), 0);
    assert_eq!(merkle::root(&nodes, &context).expect("root"), EMPTY_ROOT);
}

#[test]
fn unchanged_writes_keep_the_root() {
    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    let mut kv = txn.open_table(KV).expect("kv");
    let mut nodes = txn.open_table(NODES).expect("nodes");
    let context = [6; 32];
    let keys = pool();
    let mut root = EMPTY_ROOT;
    for key in &keys[..8] {
        root = merkle::set(&mut kv, &mut nodes, &context, key, Some(b"v")).expect("set");
    }
    let before = stored_tree(&nodes, &context);
    assert_eq!(
        merkle::set(&mut kv, &mut nodes, &context, &keys[3], Some(b"v")).expect("set"),
        root
    );
    assert_eq!(
        merkle::set(&mut kv, &mut nodes, &context, &keys[9], None).expect("remove"),
        root
    );
    assert_eq!(stored_tree(&nodes, &context), before);
    // Empty state: removing is a no-op with the empty root.
    assert_eq!(
        merkle::set(&mut kv, &mut nodes, &[7; 32], &keys[0], None).expect("remove"),
        EMPTY_ROOT
    );
    assert_eq!(stored_tree(&nodes, &[7; 32]), (None, NodeEntries::new()));
}

#[test]
fn proofs_survive_serialization() {
    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    let mut kv = txn.open_table(KV).expect("kv");
    let mut nodes = txn.open_table(NODES).expect("nodes");
    let context = [8; 32];
    let keys = pool();
    let mut root = EMPTY_ROOT;
    for key in &keys[..7] {
        root = merkle::set(&mut kv, &mut nodes, &context, key, Some(&key[..2])).expect("set");
    }
    for key in &keys {
        let proof = merkle::prove(&kv, &nodes, &context, key).expect("prove");
        let json: Proof = serde_json::from_str(&serde_json::to_string(&proof).expect("json")).expect("json back");
        let msgpack: Proof = rmp_serde::from_slice(&rmp_serde::to_vec(&proof).expect("msgpack")).expect("msgpack back");
        assert_eq!(json, proof);
        assert_eq!(msgpack, proof);
        let value = keys[..7].contains(key).then_some(&key[..2]);
        assert!(msgpack.verify(&root, key, value));
    }
}

#[test]
fn a_damaged_store_is_an_error_not_a_panic() {
    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    let mut kv = txn.open_table(KV).expect("kv");
    let mut nodes = txn.open_table(NODES).expect("nodes");
    let context = [4; 32];
    let keys = pool();
    // 00…00 and 00…01 under a node at crit 255, 5a…5a and 5a…5b under another, both under
    // a node at crit 1 (0x00 = 0000…, 0x5a = 0101…).
    for key in &keys[..4] {
        merkle::set(&mut kv, &mut nodes, &context, key, Some(b"v")).expect("set");
    }
    let node_key = |crit: u8, prefix: [u8; 32]| [&context[..], &prefix, &[crit]].concat();
    let top = node_key(1, [0; 32]);
    let low = node_key(255, [0; 32]);
    let root = merkle::root(&nodes, &context).expect("root");

    let saved = nodes
        .remove(low.as_slice())
        .expect("remove")
        .expect("stored")
        .value()
        .to_vec();
    let err = merkle::set(&mut kv, &mut nodes, &context, &keys[0], Some(b"w")).expect_err("missing node");
    assert!(matches!(err, MerkleError::MissingNode { crit: 255, .. }), "{err}");
    assert!(matches!(
        merkle::prove(&kv, &nodes, &context, &keys[1]),
        Err(MerkleError::MissingNode { crit: 255, .. })
    ));
    // The root comes from the root entry alone; the other side still proves.
    assert_eq!(merkle::root(&nodes, &context).expect("root"), root);
    let proof = merkle::prove(&kv, &nodes, &context, &keys[2]).expect("prove");
    assert!(proof.verify(&root, &keys[2], Some(b"v")));
    nodes.insert(low.as_slice(), saved.as_slice()).expect("insert");
    kv.insert([&context[..], &keys[0]].concat().as_slice(), &b"v"[..])
        .expect("insert");

    let saved = nodes
        .get(top.as_slice())
        .expect("get")
        .expect("stored")
        .value()
        .to_vec();
    nodes.insert(top.as_slice(), &[1u8, 2, 3][..]).expect("insert");
    let err = merkle::set(&mut kv, &mut nodes, &context, &keys[2], Some(b"w")).expect_err("short node");
    assert!(matches!(err, MerkleError::CorruptNode { crit: 1, len: 3, .. }), "{err}");
    assert!(matches!(
        merkle::prove(&kv, &nodes, &context, &keys[0]),
        Err(MerkleError::CorruptNode { crit: 1, len: 3, .. })
    ));
    // An unknown kind of child, and a child node that points back at its parent.
    let mut bad_kind = saved.clone();
    bad_kind[0] = 7;
    let mut cycle = saved.clone();
    cycle[..2].copy_from_slice(&[1, 1]);
    cycle[34..66].copy_from_slice(&[0; 32]);
    for entry in [bad_kind, cycle, [saved.as_slice(), &[0]].concat()] {
        nodes.insert(top.as_slice(), entry.as_slice()).expect("insert");
        let err = merkle::prove(&kv, &nodes, &context, &keys[0]).expect_err("bad node");
        assert!(matches!(err, MerkleError::CorruptNode { crit: 1, .. }), "{err}");
    }
    nodes.insert(top.as_slice(), saved.as_slice()).expect("insert");

    nodes.insert(context.as_slice(), &[9u8; 65][..]).expect("insert");
    let err = merkle::root(&nodes, &context).expect_err("short root entry");
    assert!(matches!(err, MerkleError::CorruptRoot { len: 65, .. }), "{err}");
    assert!(merkle::set(&mut kv, &mut nodes, &context, &keys[5], Some(b"v")).is_err());
    assert!(merkle::prove(&kv, &nodes, &context, &keys[5]).is_err());

    // The tree and the pairs out of step: a pair the tree does not have, a leaf whose pair
    // is gone or holds another value.
    let other = [3; 32];
    let (a, b) = ([0x10; 32], [0x90; 32]);
    merkle::set(&mut kv, &mut nodes, &other, &a, Some(b"a")).expect("set");
    kv.insert([&other[..], &b].concat().as_slice(), &b"b"[..])
        .expect("insert");
    let err = merkle::set(&mut kv, &mut nodes, &other, &b, None).expect_err("not in the tree");
    assert!(
        matches!(err, MerkleError::Inconsistent { key, .. } if key == b),
        "{err}"
    );
    kv.insert([&other[..], &a].concat().as_slice(), &b"changed"[..])
        .expect("insert");
    let err = merkle::prove(&kv, &nodes, &other, &a).expect_err("other value");
    assert!(
        matches!(err, MerkleError::Inconsistent { key, .. } if key == a),
        "{err}"
    );
    kv.remove([&other[..], &a].concat().as_slice()).expect("remove");
    let err = merkle::prove(&kv, &nodes, &other, &b).expect_err("pair gone");
    assert!(
        matches!(err, MerkleError::Inconsistent { key, .. } if key == a),
        "{err}"
    );
}

/// Rough cost of the incremental update: on the tables directly, then through a node
/// cache flushed every 64 sets, then in transactions of 64 sets each committed like an
/// executor batch. Run in release:
/// `cargo test --release -p cmesh-state --test merkle -- --ignored --nocapture cost`
#[test]
#[ignore = "a measurement, not a check; run in release"]
fn cost_of_ten_thousand_random_sets() {
    println!("directly on the tables:");
    measure_cost(None);
    println!("through a node cache, flushed every 64 sets:");
    measure_cost(Some(64));
    println!("a committed transaction per 64 sets, as the executor's batches:");
    measure_batches(false);
    measure_batches(true);
}

const COST_SETS: u32 = 10_000;

fn random_keys(from: u32, count: u32) -> Vec<[u8; 32]> {
    (from..from + count).map(|i| keccak256(&i.to_le_bytes())).collect()
}

fn set_all(
    kv: &mut Table<Bytes, Bytes>,
    nodes: &mut impl NodeStore,
    context: &[u8; 32],
    keys: &[[u8; 32]],
    value: Option<&[u8]>,
) {
    for key in keys {
        merkle::set(kv, nodes, context, key, value).expect("set");
    }
}

/// Times sets, proofs and removes in a fresh store, each phase in one transaction; with
/// `Some(batch)`, the sets go through one node cache, kept across the transactions and
/// flushed every `batch` sets.
fn measure_cost(batch: Option<usize>) {
    let store = store();
    let context = [0xab; 32];
    let value = [0x5c; 64];
    let mut cache = NodeCache::new(200_000);
    let mut timed = |what: &str, keys: &[[u8; 32]], value: Option<&[u8]>| {
        let start = Instant::now();
        let txn = store.db.begin_write().expect("write txn");
        {
            let mut kv = txn.open_table(KV).expect("kv");
            let mut nodes = txn.open_table(NODES).expect("nodes");
            match batch {
                None => set_all(&mut kv, &mut nodes, &context, keys, value),
                Some(batch) => {
                    let mut nodes = cache.over(nodes);
                    for batch in keys.chunks(batch) {
                        set_all(&mut kv, &mut nodes, &context, batch, value);
                        nodes.flush().expect("flush");
                    }
                }
            }
        }
        let writes = start.elapsed();
        txn.commit().expect("commit");
        println!(
            "  {what}: {writes:?} ({:.1} µs each), commit {:?}",
            writes.as_secs_f64() * 1e6 / keys.len() as f64,
            start.elapsed() - writes
        );
    };

    let first = random_keys(0, COST_SETS);
    timed("10,000 random-key sets into an empty context", &first, Some(&value));
    timed(
        "10,000 random-key sets into a context of 10,000",
        &random_keys(COST_SETS, COST_SETS),
        Some(&value),
    );

    let start = Instant::now();
    let read = store.db.begin_read().expect("read txn");
    let (kv, nodes) = (read.open_table(KV).expect("kv"), read.open_table(NODES).expect("nodes"));
    for key in first.iter().take(1000) {
        let proof = merkle::prove(&kv, &nodes, &context, key).expect("prove");
        assert!(proof.end.is_some_and(|end| end.key == *key));
    }
    println!("  1,000 proofs in a context of 20,000: {:?}", start.elapsed());
    drop((kv, nodes, read));

    timed("10,000 random-key removes from a context of 20,000", &first, None);
    // Keys sharing their first 248 bits with a present key: costly in a per-bit tree
    // (~249 levels each), one level more than a random key here.
    let twins: Vec<[u8; 32]> = random_keys(COST_SETS, 1000)
        .iter()
        .map(|key| with_last_byte(*key, !key[31]))
        .collect();
    timed(
        "1,000 sets of keys sharing 248 bits with a present key",
        &twins,
        Some(&value),
    );
}

/// Sets 3 × 10,000 random keys into a fresh context in transactions of 64 sets, each
/// committed (durably) like an executor batch, directly or through one node cache kept
/// across them. The writes are timed apart from the commits.
fn measure_batches(cached: bool) {
    let store = store();
    let context = [0xab; 32];
    let value = [0x5c; 64];
    let mut cache = NodeCache::new(200_000);
    for round in 0..3 {
        let (mut writes, mut commits) = (Duration::ZERO, Duration::ZERO);
        for batch in random_keys(round * COST_SETS, COST_SETS).chunks(64) {
            let start = Instant::now();
            let txn = store.db.begin_write().expect("write txn");
            {
                let mut kv = txn.open_table(KV).expect("kv");
                let mut nodes = txn.open_table(NODES).expect("nodes");
                if cached {
                    cache.trim();
                    let mut nodes = cache.over(nodes);
                    set_all(&mut kv, &mut nodes, &context, batch, Some(&value));
                    nodes.flush().expect("flush");
                } else {
                    set_all(&mut kv, &mut nodes, &context, batch, Some(&value));
                }
            }
            let written = start.elapsed();
            txn.commit().expect("commit");
            writes += written;
            commits += start.elapsed() - written;
        }
        println!(
            "  {}: 10,000 sets into a context of {}: writes {writes:?} ({:.1} µs each), commits {commits:?}",
            if cached { "through the cache" } else { "directly" },
            round * COST_SETS,
            writes.as_secs_f64() * 1e6 / f64::from(COST_SETS),
        );
    }
}
