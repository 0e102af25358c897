//! Sparse Merkle tree over a context's 32-byte keys: one 32-byte state root per context.
//!
//! Why: nodes must agree on a context's state after applying the same transactions, and a
//! client must be able to check one value (or its absence) without the whole state. The
//! root is canonical — it depends only on the set of (key, value) pairs, never on the order
//! of writes — so two nodes compare states by comparing roots, and [`Proof`] shows one key
//! against a root. The exact definition is in `docs/STATE_ROOT.md`.
//!
//! How: a binary tree over the 256 key bits where a subtree holding a single leaf hashes
//! as that leaf whatever its depth. Only subtrees with two or more leaves are stored (in
//! [`NODES`]); a subtree with fewer is read from the key-value table itself, so the tree
//! costs about one entry per stored pair. An update touches only the nodes on its key's
//! path above the point where the key parts from its neighbours in key order, so a write
//! costs O(log n) table operations for random keys (at most 256 levels for any keys).

use std::collections::BTreeMap;
use std::ops::Bound;

use cmesh_common::hash::{keccak256, keccak256_parts, to_hex0x};
use redb::{ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};

/// Hash of every subtree that holds two or more leaves, keyed by
/// context(32) ++ depth(1) ++ the key prefix of that depth (32 bytes, bits past `depth` zeroed).
pub const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("smt_nodes");

/// Root of a context with no pairs (and the hash of any empty subtree).
pub const EMPTY_ROOT: [u8; 32] = [0; 32];

const LEAF_TAG: u8 = 0x00;
const NODE_TAG: u8 = 0x01;
/// Number of key bits, the depth of a subtree that is a single key.
const KEY_BITS: usize = 256;

/// What went wrong reading or updating a context's tree.
#[derive(Debug, thiserror::Error)]
pub enum MerkleError {
    #[error("state store: {0}")]
    Store(#[from] redb::Error),
    /// A tree node entry does not hold a 32-byte hash.
    #[error("corrupt tree node at depth {depth} in context {}: {len} bytes, not a 32-byte hash", to_hex0x(.context))]
    CorruptNode { context: [u8; 32], depth: u8, len: usize },
    /// A key in the context's key range is not context(32) ++ key(32).
    #[error("corrupt state key in context {}: {len} bytes, not 64", to_hex0x(.context))]
    CorruptKey { context: [u8; 32], len: usize },
    /// A subtree holds two or more keys but its node entry is missing.
    #[error("tree node missing at depth {depth} (prefix {}) in context {}", to_hex0x(.prefix), to_hex0x(.context))]
    MissingNode {
        context: [u8; 32],
        depth: u8,
        prefix: [u8; 32],
    },
}

cmesh_common::redb_errors_into!(MerkleError, MerkleError::Store);

/// Hash of a subtree holding the single pair (key, value): keccak256(0x00 ‖ key ‖ keccak256(value)).
pub fn leaf_hash(key: &[u8; 32], value_hash: &[u8; 32]) -> [u8; 32] {
    keccak256_parts(&[&[LEAF_TAG], key, value_hash])
}

/// Hash of a subtree holding two or more pairs: keccak256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    keccak256_parts(&[&[NODE_TAG], left, right])
}

/// Sets (`Some`) or removes (`None`) `key` in `kv` and updates the tree; returns the
/// context's new root. Writing the value a key already has, or removing an absent key,
/// changes nothing. On an error the tables may be half updated: abort the transaction.
pub fn set(
    kv: &mut Table<'_, &'static [u8], &'static [u8]>,
    nodes: &mut Table<'_, &'static [u8], &'static [u8]>,
    context: &[u8; 32],
    key: &[u8; 32],
    value: Option<&[u8]>,
) -> Result<[u8; 32], MerkleError> {
    let full_key = kv_key(context, key);
    let unchanged = match value {
        Some(value) => kv
            .insert(full_key.as_slice(), value)?
            .is_some_and(|old| old.value() == value),
        None => kv.remove(full_key.as_slice())?.is_none(),
    };
    if unchanged {
        return root(&*kv, &*nodes, context);
    }
    let this = match value {
        Some(value) => Subtree::Leaf {
            key: *key,
            value_hash: keccak256(value),
        },
        None => Subtree::Empty,
    };
    // Deeper than `split`, the key's path holds only this key (or nothing): no neighbour in
    // key order shares more than `split` bits with it, and subtrees are key ranges.
    let Some(split) = neighbours(&*kv, context, key)?
        .iter()
        .flatten()
        .map(|other| common_prefix_bits(key, other))
        .max()
    else {
        // No other key in the context: the root is this leaf, or empty. No node entries
        // existed (at most one key before) and none are needed.
        return Ok(this.hash());
    };
    let mut current = this;
    for depth in (0..=split).rev() {
        let sibling = subtree(&*kv, &*nodes, context, depth + 1, &flip_bit(key, depth))?;
        current = if bit(key, depth) {
            combine(sibling, current)
        } else {
            combine(current, sibling)
        };
        let node = node_key(context, depth, key);
        match &current {
            Subtree::Internal(hash) => {
                nodes.insert(node.as_slice(), hash.as_slice())?;
            }
            Subtree::Empty | Subtree::Leaf { .. } => {
                nodes.remove(node.as_slice())?;
            }
        }
    }
    Ok(current.hash())
}

/// The context's current root ([`EMPTY_ROOT`] if it has no pairs).
pub fn root(
    kv: &impl ReadableTable<&'static [u8], &'static [u8]>,
    nodes: &impl ReadableTable<&'static [u8], &'static [u8]>,
    context: &[u8; 32],
) -> Result<[u8; 32], MerkleError> {
    Ok(subtree(kv, nodes, context, 0, &[0; 32])?.hash())
}

/// Proof of `key`'s value (or absence) against the context's current root.
pub fn prove(
    kv: &impl ReadableTable<&'static [u8], &'static [u8]>,
    nodes: &impl ReadableTable<&'static [u8], &'static [u8]>,
    context: &[u8; 32],
    key: &[u8; 32],
) -> Result<Proof, MerkleError> {
    let mut siblings = Vec::new();
    let mut node = subtree(kv, nodes, context, 0, key)?;
    loop {
        let depth = siblings.len();
        let end = match node {
            // Never at depth 256: a single-key subtree is a leaf or empty.
            Subtree::Internal(_) => {
                siblings.push(subtree(kv, nodes, context, depth + 1, &flip_bit(key, depth))?.hash());
                node = subtree(kv, nodes, context, depth + 1, key)?;
                continue;
            }
            Subtree::Empty => ProofEnd::Empty,
            Subtree::Leaf { key: found, .. } if found == *key => ProofEnd::Leaf,
            Subtree::Leaf { key, value_hash } => ProofEnd::OtherLeaf { key, value_hash },
        };
        return Ok(Proof { siblings, end });
    }
}

/// Proof of one key's value or absence: the path from the root down to the first subtree
/// on the key's path that holds at most one leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// Hashes of the siblings of the path's nodes, from the root down: `siblings[d]` is the
    /// hash of the depth-`d+1` subtree whose prefix is the key's first `d` bits followed by
    /// the opposite of the key's bit `d`. Every node above the end holds two or more leaves.
    pub siblings: Vec<[u8; 32]>,
    /// The subtree at depth `siblings.len()` on the key's path.
    pub end: ProofEnd,
}

/// What ends a proof's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProofEnd {
    /// The key's own leaf: the key is present (its value is checked by [`Proof::verify`]).
    Leaf,
    /// A single leaf of another key sharing the path: the key is absent.
    OtherLeaf { key: [u8; 32], value_hash: [u8; 32] },
    /// Nothing: the key is absent.
    Empty,
}

impl Proof {
    /// True if this proves that, under `root`, `key` holds `value` (`None`: is absent).
    pub fn verify(&self, root: &[u8; 32], key: &[u8; 32], value: Option<&[u8]>) -> bool {
        let depth = self.siblings.len();
        if depth > KEY_BITS {
            return false;
        }
        let mut hash = match (&self.end, value) {
            (ProofEnd::Leaf, Some(value)) => leaf_hash(key, &keccak256(value)),
            (ProofEnd::Empty, None) => EMPTY_ROOT,
            // The other leaf must lie in the subtree the path reached, and not be the key.
            (ProofEnd::OtherLeaf { key: other, value_hash }, None)
                if other != key && common_prefix_bits(other, key) >= depth =>
            {
                leaf_hash(other, value_hash)
            }
            _ => return false,
        };
        for (depth, sibling) in self.siblings.iter().enumerate().rev() {
            hash = if bit(key, depth) {
                node_hash(sibling, &hash)
            } else {
                node_hash(&hash, sibling)
            };
        }
        hash == *root
    }
}

/// Removes every pair and node of `context` (used when a node leaves a context).
pub fn clear(
    kv: &mut Table<'_, &'static [u8], &'static [u8]>,
    nodes: &mut Table<'_, &'static [u8], &'static [u8]>,
    context: &[u8; 32],
) -> Result<(), MerkleError> {
    let (low, high) = (kv_key(context, &[0; 32]), kv_key(context, &[0xff; 32]));
    kv.retain_in::<&[u8], _>(low.as_slice()..=high.as_slice(), |_, _| false)?;
    let mut low = [0u8; 65];
    low[..32].copy_from_slice(context);
    let mut high = [0xffu8; 65];
    high[..32].copy_from_slice(context);
    nodes.retain_in::<&[u8], _>(low.as_slice()..=high.as_slice(), |_, _| false)?;
    Ok(())
}

/// Reference: the root of a set of pairs computed from scratch (tests, and checking a store).
pub fn root_of(pairs: &BTreeMap<[u8; 32], Vec<u8>>) -> [u8; 32] {
    let leaves: Vec<([u8; 32], [u8; 32])> = pairs.iter().map(|(key, value)| (*key, keccak256(value))).collect();
    hash_of_sorted(&leaves, 0)
}

/// Hash of the depth-`depth` subtree holding `leaves` (sorted, distinct, sharing `depth` bits).
fn hash_of_sorted(leaves: &[([u8; 32], [u8; 32])], depth: usize) -> [u8; 32] {
    match leaves {
        [] => EMPTY_ROOT,
        [(key, value_hash)] => leaf_hash(key, value_hash),
        _ => {
            // Two distinct keys differ in some bit, so here depth < 256.
            let split = leaves.partition_point(|(key, _)| !bit(key, depth));
            node_hash(
                &hash_of_sorted(&leaves[..split], depth + 1),
                &hash_of_sorted(&leaves[split..], depth + 1),
            )
        }
    }
}

/// A subtree as far as hashing is concerned.
enum Subtree {
    Empty,
    Leaf {
        key: [u8; 32],
        value_hash: [u8; 32],
    },
    /// Two or more leaves; the stored hash.
    Internal([u8; 32]),
}

impl Subtree {
    fn hash(&self) -> [u8; 32] {
        match self {
            Subtree::Empty => EMPTY_ROOT,
            Subtree::Leaf { key, value_hash } => leaf_hash(key, value_hash),
            Subtree::Internal(hash) => *hash,
        }
    }
}

/// The parent of two sibling subtrees.
fn combine(left: Subtree, right: Subtree) -> Subtree {
    match (left, right) {
        (Subtree::Empty, Subtree::Empty) => Subtree::Empty,
        (Subtree::Empty, leaf @ Subtree::Leaf { .. }) | (leaf @ Subtree::Leaf { .. }, Subtree::Empty) => leaf,
        (left, right) => Subtree::Internal(node_hash(&left.hash(), &right.hash())),
    }
}

/// The depth-`depth` subtree containing `path` (only its first `depth` bits matter): its
/// node entry if it has one, otherwise read from the pairs in its key range.
fn subtree(
    kv: &impl ReadableTable<&'static [u8], &'static [u8]>,
    nodes: &impl ReadableTable<&'static [u8], &'static [u8]>,
    context: &[u8; 32],
    depth: usize,
    path: &[u8; 32],
) -> Result<Subtree, MerkleError> {
    if depth < KEY_BITS {
        if let Some(entry) = nodes.get(node_key(context, depth, path).as_slice())? {
            let hash = <[u8; 32]>::try_from(entry.value()).map_err(|_| MerkleError::CorruptNode {
                context: *context,
                depth: depth as u8,
                len: entry.value().len(),
            })?;
            return Ok(Subtree::Internal(hash));
        }
    }
    let low = kv_key(context, &with_suffix(path, depth, 0x00));
    let high = kv_key(context, &with_suffix(path, depth, 0xff));
    let mut range = kv.range::<&[u8]>(low.as_slice()..=high.as_slice())?;
    let Some(first) = range.next() else {
        return Ok(Subtree::Empty);
    };
    let (full_key, value) = first?;
    let key = key_of(context, full_key.value())?;
    match range.next() {
        None => Ok(Subtree::Leaf {
            key,
            value_hash: keccak256(value.value()),
        }),
        Some(Err(err)) => Err(err.into()),
        Some(Ok(_)) => Err(MerkleError::MissingNode {
            context: *context,
            depth: depth as u8,
            prefix: with_suffix(path, depth, 0x00),
        }),
    }
}

/// The context's keys just before and just after `key` (excluding `key` itself).
fn neighbours(
    kv: &impl ReadableTable<&'static [u8], &'static [u8]>,
    context: &[u8; 32],
    key: &[u8; 32],
) -> Result<[Option<[u8; 32]>; 2], MerkleError> {
    let (low, this, high) = (
        kv_key(context, &[0; 32]),
        kv_key(context, key),
        kv_key(context, &[0xff; 32]),
    );
    let before = kv
        .range::<&[u8]>((Bound::Included(low.as_slice()), Bound::Excluded(this.as_slice())))?
        .next_back()
        .transpose()?
        .map(|(full_key, _)| key_of(context, full_key.value()))
        .transpose()?;
    let after = kv
        .range::<&[u8]>((Bound::Excluded(this.as_slice()), Bound::Included(high.as_slice())))?
        .next()
        .transpose()?
        .map(|(full_key, _)| key_of(context, full_key.value()))
        .transpose()?;
    Ok([before, after])
}

fn kv_key(context: &[u8; 32], key: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(context);
    out[32..].copy_from_slice(key);
    out
}

/// The key part of a stored context(32) ++ key(32).
fn key_of(context: &[u8; 32], full_key: &[u8]) -> Result<[u8; 32], MerkleError> {
    full_key
        .get(32..)
        .and_then(|key| <[u8; 32]>::try_from(key).ok())
        .ok_or(MerkleError::CorruptKey {
            context: *context,
            len: full_key.len(),
        })
}

/// context(32) ++ depth(1) ++ `path`'s first `depth` bits, zero-padded (32). `depth` < 256.
fn node_key(context: &[u8; 32], depth: usize, path: &[u8; 32]) -> [u8; 65] {
    let mut out = [0u8; 65];
    out[..32].copy_from_slice(context);
    out[32] = depth as u8;
    out[33..].copy_from_slice(&with_suffix(path, depth, 0x00));
    out
}

/// `path`'s first `depth` bits followed by bits all 0 (`fill` = 0x00) or all 1 (0xff).
fn with_suffix(path: &[u8; 32], depth: usize, fill: u8) -> [u8; 32] {
    let mut out = [fill; 32];
    let whole = depth / 8;
    out[..whole].copy_from_slice(&path[..whole]);
    if whole < 32 {
        let keep = !(0xffu8 >> (depth % 8));
        out[whole] = (path[whole] & keep) | (fill & !keep);
    }
    out
}

/// Bit `index` of `key`, bit 0 being the most significant bit of byte 0. `index` < 256.
fn bit(key: &[u8; 32], index: usize) -> bool {
    (key[index / 8] >> (7 - index % 8)) & 1 == 1
}

fn flip_bit(key: &[u8; 32], index: usize) -> [u8; 32] {
    let mut out = *key;
    out[index / 8] ^= 0x80 >> (index % 8);
    out
}

/// Number of leading bits `a` and `b` share (256 if equal).
fn common_prefix_bits(a: &[u8; 32], b: &[u8; 32]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .map_or(KEY_BITS, |byte| byte * 8 + (a[byte] ^ b[byte]).leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_prefixes() {
        let mut key = [0u8; 32];
        key[0] = 0b1010_0000;
        assert!(bit(&key, 0) && !bit(&key, 1) && bit(&key, 2));
        assert_eq!(flip_bit(&key, 1)[0], 0b1110_0000);
        assert_eq!(flip_bit(&key, 255)[31], 1);
        let ones = [0xffu8; 32];
        assert_eq!(with_suffix(&ones, 0, 0), [0; 32]);
        assert_eq!(with_suffix(&ones, 256, 0), ones);
        assert_eq!(with_suffix(&ones, 3, 0)[0], 0b1110_0000);
        assert_eq!(with_suffix(&[0; 32], 3, 0xff)[0], 0b0001_1111);
        assert_eq!(with_suffix(&ones, 9, 0)[..2], [0xff, 0x80]);
        assert_eq!(with_suffix(&ones, 9, 0)[2..], [0; 30]);
    }

    #[test]
    fn common_prefix() {
        let a = [0u8; 32];
        let mut b = a;
        assert_eq!(common_prefix_bits(&a, &b), 256);
        b[31] = 1;
        assert_eq!(common_prefix_bits(&a, &b), 255);
        b[0] = 0x80;
        assert_eq!(common_prefix_bits(&a, &b), 0);
        b[0] = 0x01;
        assert_eq!(common_prefix_bits(&a, &b), 7);
    }

    #[test]
    fn root_of_small_sets() {
        assert_eq!(root_of(&BTreeMap::new()), EMPTY_ROOT);
        let key = [7u8; 32];
        let one = BTreeMap::from([(key, b"v".to_vec())]);
        assert_eq!(root_of(&one), leaf_hash(&key, &keccak256(b"v")));
        // Two keys split at bit 0: one internal node over two leaves.
        let (left, right) = ([0u8; 32], [0xffu8; 32]);
        let two = BTreeMap::from([(left, b"a".to_vec()), (right, b"b".to_vec())]);
        assert_eq!(
            root_of(&two),
            node_hash(
                &leaf_hash(&left, &keccak256(b"a")),
                &leaf_hash(&right, &keccak256(b"b"))
            )
        );
    }

    #[test]
    fn proof_rejects_an_overlong_path() {
        let proof = Proof {
            siblings: vec![[0; 32]; 257],
            end: ProofEnd::Empty,
        };
        assert!(!proof.verify(&EMPTY_ROOT, &[0; 32], None));
    }
}
