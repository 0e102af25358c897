//! The state tree against its definition: incremental roots equal roots computed from
//! scratch, the node table holds exactly the internal nodes, and proofs verify only true
//! claims. Real redb files in temp dirs.

use std::collections::BTreeMap;
use std::time::Instant;

use cmesh_common::hash::{keccak256, keccak256_parts, to_hex0x};
use cmesh_state::merkle::{self, MerkleError, Proof, ProofEnd, EMPTY_ROOT, NODES};
use proptest::prelude::*;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition};
use tempfile::TempDir;

/// The state actor's pair table: context(32) ++ key(32) → value.
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

type Pairs = BTreeMap<[u8; 32], Vec<u8>>;
type Bytes = &'static [u8];

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

fn spec_node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    keccak256_parts(&[&[0x01], left, right])
}

fn spec_bit(key: &[u8; 32], index: usize) -> bool {
    key[index / 8] & (0x80 >> (index % 8)) != 0
}

/// Root of `pairs`, and every internal node as (depth ++ zero-padded prefix) → hash.
fn spec_tree(pairs: &Pairs) -> ([u8; 32], BTreeMap<Vec<u8>, [u8; 32]>) {
    fn walk(
        pairs: &[(&[u8; 32], &Vec<u8>)],
        depth: usize,
        prefix: [u8; 32],
        out: &mut BTreeMap<Vec<u8>, [u8; 32]>,
    ) -> [u8; 32] {
        match pairs {
            [] => [0; 32],
            [(key, value)] => spec_leaf(key, value),
            _ => {
                let (left, right): (Vec<_>, Vec<_>) = pairs.iter().partition(|(key, _)| !spec_bit(key, depth));
                let mut right_prefix = prefix;
                right_prefix[depth / 8] |= 0x80 >> (depth % 8);
                let hash = spec_node(
                    &walk(&left, depth + 1, prefix, out),
                    &walk(&right, depth + 1, right_prefix, out),
                );
                let mut node = vec![depth as u8];
                node.extend_from_slice(&prefix);
                out.insert(node, hash);
                hash
            }
        }
    }
    let pairs: Vec<_> = pairs.iter().collect();
    let mut nodes = BTreeMap::new();
    let root = walk(&pairs, 0, [0; 32], &mut nodes);
    (root, nodes)
}

// ---- reading the tables ----

/// The context's NODES entries as (depth ++ prefix) → hash, checking the key layout.
fn stored_nodes(nodes: &impl ReadableTable<Bytes, Bytes>, context: &[u8; 32]) -> BTreeMap<Vec<u8>, [u8; 32]> {
    let mut low = context.to_vec();
    low.extend([0u8; 33]);
    let mut high = context.to_vec();
    high.extend([0xffu8; 33]);
    let mut out = BTreeMap::new();
    for entry in nodes.range::<&[u8]>(low.as_slice()..=high.as_slice()).expect("range") {
        let (key, value) = entry.expect("entry");
        let (key, value) = (key.value(), value.value());
        assert_eq!(key.len(), 65, "node key layout is context ++ depth ++ prefix");
        let hash: [u8; 32] = value.try_into().expect("node value is a 32-byte hash");
        out.insert(key[32..].to_vec(), hash);
    }
    out
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

/// What the definition says about a set of pairs: its root, its internal nodes, its proofs.
struct Reference {
    pairs: Pairs,
    root: [u8; 32],
    nodes: BTreeMap<Vec<u8>, [u8; 32]>,
}

impl Reference {
    fn new(pairs: Pairs) -> Self {
        let (root, nodes) = spec_tree(&pairs);
        Reference { pairs, root, nodes }
    }

    fn get(&self, key: &[u8; 32]) -> Option<&[u8]> {
        self.pairs.get(key).map(Vec::as_slice)
    }

    /// The pairs of the depth-`depth` subtree containing `path`.
    fn subtree(&self, path: &[u8; 32], depth: usize) -> Vec<(&[u8; 32], &Vec<u8>)> {
        let (mut low, mut high) = (*path, *path);
        for index in depth..256 {
            low[index / 8] &= !(0x80 >> (index % 8));
            high[index / 8] |= 0x80 >> (index % 8);
        }
        self.pairs.range(low..=high).collect()
    }

    fn hash(&self, path: &[u8; 32], depth: usize) -> [u8; 32] {
        match self.subtree(path, depth)[..] {
            [] => [0; 32],
            [(key, value)] => spec_leaf(key, value),
            _ => self.nodes[&node_id(path, depth)],
        }
    }

    /// The proof the definition gives for `key`: down the path while it holds two or more
    /// pairs, then what holds at most one.
    fn proof(&self, key: &[u8; 32]) -> Proof {
        let mut siblings = Vec::new();
        loop {
            let depth = siblings.len();
            let end = match self.subtree(key, depth)[..] {
                [] => ProofEnd::Empty,
                [(found, _)] if found == key => ProofEnd::Leaf,
                [(found, value)] => ProofEnd::OtherLeaf {
                    key: *found,
                    value_hash: keccak256(value),
                },
                _ => {
                    let mut sibling = *key;
                    sibling[depth / 8] ^= 0x80 >> (depth % 8);
                    siblings.push(self.hash(&sibling, depth + 1));
                    continue;
                }
            };
            return Proof { siblings, end };
        }
    }
}

/// depth ++ `path`'s first `depth` bits, zero-padded: a NODES key without its context.
fn node_id(path: &[u8; 32], depth: usize) -> Vec<u8> {
    let mut prefix = *path;
    for index in depth..256 {
        prefix[index / 8] &= !(0x80 >> (index % 8));
    }
    let mut id = vec![depth as u8];
    id.extend_from_slice(&prefix);
    id
}

/// Root, node table and pair count of `context` against the reference.
fn check_tree(
    kv: &impl ReadableTable<Bytes, Bytes>,
    nodes: &impl ReadableTable<Bytes, Bytes>,
    context: &[u8; 32],
    reference: &Reference,
) -> Result<(), TestCaseError> {
    let root = merkle::root(kv, nodes, context).map_err(fail)?;
    prop_assert_eq!(to_hex0x(&root), to_hex0x(&reference.root));
    prop_assert_eq!(&stored_nodes(nodes, context), &reference.nodes);
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

/// Cases to run: `PROPTEST_CASES` if set, else a number that keeps a debug run short (the
/// pool's keys make paths 256 levels deep, and unoptimized keccak costs ~30 µs).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// After every step: `set` returns the root of the model computed from scratch, each
    /// context's stored root and node table are exactly the model's (so nothing stale
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
            prop_assert_eq!(merkle::root(&kv, &nodes, &CONTEXTS[0]).map_err(fail)?, EMPTY_ROOT);
            for key in &keys[..3] {
                check_proof(&kv, &nodes, &CONTEXTS[0], &empty, key)?;
            }
            check_tree(&kv, &nodes, &CONTEXTS[1], &models[1])?;
            prop_assert_eq!(&foreign_entries(&kv, &nodes, &CONTEXTS), &foreign_before);
        }
        txn.commit().expect("commit");
    }
}

/// Proofs verify exactly the true claims: the right value (or absence) under the right
/// root, and nothing else — not a wrong value, a wrong presence, a wrong root, a tampered
/// path, nor a claim about another key that is false (an absence proof legitimately covers
/// every key of its empty subtree, which are all absent).
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
    let mut ends = [0usize; 3];
    for (index, pairs) in states.into_iter().enumerate() {
        let context = [0x70 + index as u8; 32];
        for (key, value) in &pairs {
            merkle::set(&mut kv, &mut nodes, &context, key, Some(value)).expect("set");
        }
        let reference = Reference::new(pairs);
        let root = merkle::root(&kv, &nodes, &context).expect("root");
        assert_eq!(root, reference.root);
        let mut wrong_root = root;
        wrong_root[31] ^= 1;
        for (position, key) in keys.iter().enumerate() {
            let proof = check_proof(&kv, &nodes, &context, &reference, key).expect("proof");
            ends[match proof.end {
                ProofEnd::Leaf => 0,
                ProofEnd::OtherLeaf { .. } => 1,
                ProofEnd::Empty => 2,
            }] += 1;
            let truth = reference.get(key);
            assert!(proof.verify(&root, key, truth), "state {index}, key {position}");
            assert!(!proof.verify(&wrong_root, key, truth));
            assert!(!proof.verify(&root, key, false_claim(&reference, key).as_deref()));
            match truth {
                Some(value) => {
                    assert!(!proof.verify(&root, key, None));
                    assert!(!proof.verify(&root, key, Some(&value[1..])));
                }
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
                        assert!(truth.is_none(), "a presence proof verified for another key");
                    }
                }
            }
            if let Some(first) = proof.siblings.first() {
                let mut tampered = proof.clone();
                tampered.siblings[0] = keccak256(first);
                assert!(!tampered.verify(&root, key, truth));
                let mut shorter = proof.clone();
                shorter.siblings.pop();
                assert!(!shorter.verify(&root, key, truth));
            }
            let mut longer = proof.clone();
            longer.siblings.push([0; 32]);
            assert!(!longer.verify(&root, key, truth));
            if let ProofEnd::OtherLeaf { key: other, value_hash } = proof.end {
                // The other leaf can't be passed off as the key itself, nor moved.
                let mut swapped = proof.clone();
                swapped.end = ProofEnd::OtherLeaf { key: *key, value_hash };
                assert!(!swapped.verify(&root, key, None));
                assert!(!proof.verify(&root, &other, None));
            }
        }
    }
    assert!(
        ends.iter().all(|count| *count > 0),
        "every kind of proof end was seen: {ends:?}"
    );
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

/// Checked against an independent implementation of the definition (Python, own Keccak).
const VECTOR_ROOT: &str = "0x3be3a1e3e4dc44a25bfcaf3254f9c34bf5c821e4d87520681973c41a698771f0";

#[test]
fn fixed_vector() {
    let pairs = vector();
    let [(k1, v1), (k2, v2), (k3, v3), (k4, v4)] = pairs[..] else {
        unreachable!()
    };
    // k1 and k2 differ only in the last bit: the depth-255 node holds both, and each node
    // from depth 254 up to 2 has it below on the left and nothing on the right; k4 splits
    // off at bit 1 and k3 at bit 0.
    let mut deep = spec_node(&spec_leaf(&k1, v1), &spec_leaf(&k2, v2));
    for _depth in 2..255 {
        deep = spec_node(&deep, &[0; 32]);
    }
    let left = spec_node(&deep, &spec_leaf(&k4, v4));
    let expected = spec_node(&left, &spec_leaf(&k3, v3));
    assert_eq!(to_hex0x(&expected), VECTOR_ROOT);

    let model: Pairs = pairs.iter().map(|(key, value)| (*key, value.to_vec())).collect();
    assert_eq!(merkle::root_of(&model), expected);

    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    {
        let mut kv = txn.open_table(KV).expect("kv");
        let mut nodes = txn.open_table(NODES).expect("nodes");
        let context = [0xc0; 32];
        let mut root = EMPTY_ROOT;
        for (key, value) in &pairs {
            root = merkle::set(&mut kv, &mut nodes, &context, key, Some(value)).expect("set");
        }
        assert_eq!(to_hex0x(&root), VECTOR_ROOT);
        // 254 nodes on the deep path (depths 2..=255), plus depths 1 and 0.
        assert_eq!(stored_nodes(&nodes, &context).len(), 256);
        let proof = merkle::prove(&kv, &nodes, &context, &k2).expect("prove");
        assert_eq!(proof.siblings.len(), 256);
        assert!(proof.verify(&root, &k2, Some(v2)));
        let proof = merkle::prove(&kv, &nodes, &context, &k3).expect("prove");
        assert_eq!(proof.siblings, vec![left]);
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
        assert_eq!(
            merkle::root(&kv, &nodes, &context).expect("root"),
            expected,
            "order {seed}"
        );
        trees.push(stored_nodes(&nodes, &context));
    }
    assert!(trees.windows(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(trees[0], spec_tree(&model).1);
}

#[test]
fn keys_differing_in_the_last_bit_make_a_full_depth_path() {
    let (a, b) = ([0x33; 32], with_last_byte([0x33; 32], 0x32));
    let store = store();
    let txn = store.db.begin_write().expect("write txn");
    let mut kv = txn.open_table(KV).expect("kv");
    let mut nodes = txn.open_table(NODES).expect("nodes");
    let context = [9; 32];
    merkle::set(&mut kv, &mut nodes, &context, &a, Some(b"a")).expect("set");
    assert!(stored_nodes(&nodes, &context).is_empty(), "a single leaf needs no node");
    let root = merkle::set(&mut kv, &mut nodes, &context, &b, Some(b"b")).expect("set");
    let stored = stored_nodes(&nodes, &context);
    assert_eq!(stored.len(), 256);
    assert_eq!(
        stored.keys().map(|node| node[0]).collect::<Vec<_>>(),
        (0..=255).collect::<Vec<u8>>()
    );
    for (key, value) in [(a, b"a"), (b, b"b")] {
        let proof = merkle::prove(&kv, &nodes, &context, &key).expect("prove");
        assert_eq!(proof.siblings.len(), 256);
        assert!(proof.verify(&root, &key, Some(value)));
    }
    let absent = with_last_byte([0x33; 32], 0x31);
    let proof = merkle::prove(&kv, &nodes, &context, &absent).expect("prove");
    assert_eq!(proof.siblings.len(), 255);
    assert_eq!(proof.end, ProofEnd::Empty);
    assert!(proof.verify(&root, &absent, None));

    let root = merkle::set(&mut kv, &mut nodes, &context, &a, None).expect("remove");
    assert_eq!(root, spec_leaf(&b, b"b"));
    assert!(stored_nodes(&nodes, &context).is_empty(), "stale nodes after a removal");
    let proof = merkle::prove(&kv, &nodes, &context, &a).expect("prove");
    assert_eq!(
        proof,
        Proof {
            siblings: vec![],
            end: ProofEnd::OtherLeaf {
                key: b,
                value_hash: keccak256(b"b")
            }
        }
    );
    assert!(proof.verify(&root, &a, None));
    // The other leaf does not prove the absence of the key it holds.
    assert!(!proof.verify(&root, &b, None));
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
    assert!(stored_nodes(&nodes, &context).len() >= keys.len() - 1);
    let mut last = None;
    for key in scrambled(&keys, 7) {
        last = Some(merkle::set(&mut kv, &mut nodes, &context, &key, None).expect("remove"));
    }
    assert_eq!(last, Some(EMPTY_ROOT));
    assert!(stored_nodes(&nodes, &context).is_empty());
    assert_eq!(nodes.len().expect("len"), 0);
    assert_eq!(kv.len().expect("len"), 0);
    assert_eq!(merkle::root(&kv, &nodes, &context).expect("root"), EMPTY_ROOT);
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
    let before = stored_nodes(&nodes, &context);
    assert_eq!(
        merkle::set(&mut kv, &mut nodes, &context, &keys[3], Some(b"v")).expect("set"),
        root
    );
    assert_eq!(
        merkle::set(&mut kv, &mut nodes, &context, &keys[9], None).expect("remove"),
        root
    );
    assert_eq!(stored_nodes(&nodes, &context), before);
    // Empty state: removing is a no-op with the empty root.
    assert_eq!(
        merkle::set(&mut kv, &mut nodes, &[7; 32], &keys[0], None).expect("remove"),
        EMPTY_ROOT
    );
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
    for key in &keys[..4] {
        merkle::set(&mut kv, &mut nodes, &context, key, Some(b"v")).expect("set");
    }
    let node_key = |depth: u8| {
        let mut key = context.to_vec();
        key.push(depth);
        key.extend([0u8; 32]);
        key
    };

    // keys[0] and keys[1] (all zeros, and zeros but the last bit) meet 255 levels deep;
    // drop one of their nodes, which `set` of keys[5] reads as a sibling on its way up.
    nodes.remove(node_key(2).as_slice()).expect("remove");
    let err = merkle::set(&mut kv, &mut nodes, &context, &keys[5], Some(b"w")).expect_err("missing node");
    assert!(matches!(err, MerkleError::MissingNode { depth: 2, .. }), "{err}");
    assert!(merkle::prove(&kv, &nodes, &context, &keys[0]).is_err());

    nodes.insert(node_key(0).as_slice(), &[1u8, 2, 3][..]).expect("insert");
    let err = merkle::root(&kv, &nodes, &context).expect_err("short node");
    assert!(
        matches!(err, MerkleError::CorruptNode { depth: 0, len: 3, .. }),
        "{err}"
    );
    assert!(merkle::prove(&kv, &nodes, &context, &keys[2]).is_err());

    nodes.remove(node_key(0).as_slice()).expect("remove");
    let err = merkle::root(&kv, &nodes, &context).expect_err("missing node");
    assert!(matches!(err, MerkleError::MissingNode { depth: 0, .. }), "{err}");

    // A key of the wrong length inside another context's key range.
    let other = [3; 32];
    let mut bad = other.to_vec();
    bad.extend([0x77u8; 8]);
    kv.insert(bad.as_slice(), &b"x"[..]).expect("insert");
    let err = merkle::root(&kv, &nodes, &other).expect_err("bad key");
    assert!(matches!(err, MerkleError::CorruptKey { len: 40, .. }), "{err}");
    assert!(merkle::set(&mut kv, &mut nodes, &other, &[0xee; 32], Some(b"v")).is_err());
}

/// Rough cost of the incremental update. Run in release:
/// `cargo test --release -p cmesh-state --test merkle -- --ignored --nocapture cost`
#[test]
#[ignore = "a measurement, not a check; run in release"]
fn cost_of_ten_thousand_random_sets() {
    const N: u32 = 10_000;
    let store = store();
    let context = [0xab; 32];
    let random_keys = |from: u32, count: u32| -> Vec<[u8; 32]> {
        (from..from + count).map(|i| keccak256(&i.to_le_bytes())).collect()
    };
    let value = [0x5c; 64];
    let timed = |what: &str, keys: &[[u8; 32]], value: Option<&[u8]>| {
        let start = Instant::now();
        let txn = store.db.begin_write().expect("write txn");
        {
            let mut kv = txn.open_table(KV).expect("kv");
            let mut nodes = txn.open_table(NODES).expect("nodes");
            for key in keys {
                merkle::set(&mut kv, &mut nodes, &context, key, value).expect("set");
            }
        }
        let writes = start.elapsed();
        txn.commit().expect("commit");
        println!(
            "{what}: {writes:?} ({:.1} µs each), commit {:?}",
            writes.as_secs_f64() * 1e6 / keys.len() as f64,
            start.elapsed() - writes
        );
    };

    let first = random_keys(0, N);
    timed("10,000 random-key sets into an empty context", &first, Some(&value));
    timed(
        "10,000 random-key sets into a context of 10,000",
        &random_keys(N, N),
        Some(&value),
    );

    let start = Instant::now();
    let read = store.db.begin_read().expect("read txn");
    let (kv, nodes) = (read.open_table(KV).expect("kv"), read.open_table(NODES).expect("nodes"));
    for key in first.iter().take(1000) {
        let proof = merkle::prove(&kv, &nodes, &context, key).expect("prove");
        assert!(proof.end == ProofEnd::Leaf);
    }
    println!("1,000 proofs in a context of 20,000: {:?}", start.elapsed());
    drop((kv, nodes, read));

    timed("10,000 random-key removes from a context of 20,000", &first, None);
    // The costly case: keys sharing their first 248 bits with a present key, so each
    // update re-hashes a path ~249 levels long.
    let twins: Vec<[u8; 32]> = random_keys(N, 1000)
        .iter()
        .map(|key| with_last_byte(*key, !key[31]))
        .collect();
    timed(
        "1,000 sets of keys sharing 248 bits with a present key",
        &twins,
        Some(&value),
    );
}
