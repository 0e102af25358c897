//! Crit-bit Merkle tree over a context's 32-byte keys: one 32-byte state root per context.
//!
//! Why: nodes must agree on a context's state after applying the same transactions, and a
//! client must be able to check one value (or its absence) without the whole state. The
//! root is canonical — it depends only on the set of (key, value) pairs, never on the order
//! of writes — so two nodes compare states by comparing roots, and [`Proof`] shows one key
//! against a root. The exact definition is in `docs/STATE_ROOT.md`.
//!
//! How: a compressed binary (Patricia) tree in which only branching nodes exist, each
//! labelled with its crit bit (the first bit where its keys differ). App keys share long
//! prefixes, so a per-bit tree would walk and re-hash dozens of single-child levels per
//! write; here a write reads, rewrites and re-hashes only the branching nodes on its key's
//! path, about log2(n) of them. Each stored node holds its two children's hashes and
//! labels, so a write never reads siblings and never scans the pair table.
//!
//! The tree's entries are the rows of [`NODES`], whose layout is described there.
//! [`set`] and [`clear`] reach them through [`NodeStore`], so they run on the
//! redb table directly or through the state executor's cache of it
//! ([`NodeCache`](crate::node_cache::NodeCache)); the tree algorithm is the same.
//!
//! Hashing can wait: [`write()`] changes the tree's shape at once but only marks the nodes
//! on the key's path stale, and [`refresh`] hashes every stale node once, bottom up. A
//! batch of writes (a catch-up page, a received batch) then hashes the top of the tree,
//! which all their paths share, once instead of once per write. Stale marks live only in
//! the executor's cache: a flush refuses to store one, so a stored tree is always hashed.
//!
//! [`NODES`]: crate::tables::NODES

use std::collections::BTreeMap;

use cmesh_common::hash::{keccak256, keccak256_parts, to_hex0x};
use redb::{ReadableTable, Table};
use serde::{Deserialize, Serialize};

/// Root of a context with no pairs.
pub const EMPTY_ROOT: [u8; 32] = [0; 32];

const LEAF_TAG: u8 = 0x00;
const NODE_TAG: u8 = 0x01;
/// Number of key bits.
const KEY_BITS: usize = 256;
/// Length of one encoded child, in a node entry or the root entry.
const CHILD_LEN: usize = 66;
/// The kind byte of a stale child; never stored (see [`is_stale_entry`]).
const STALE_TAG: u8 = 2;

/// Whether an entry's bytes (a root entry or a node entry) name a stale child: such an
/// entry must not be stored.
pub fn is_stale_entry(bytes: &[u8]) -> bool {
    bytes.chunks(CHILD_LEN).any(|child| child.first() == Some(&STALE_TAG))
}

/// What went wrong reading or updating a context's tree.
#[derive(Debug, thiserror::Error)]
pub enum MerkleError {
    #[error("state store: {0}")]
    Store(#[from] redb::Error),
    /// A node entry is not two well-formed children (right length, known kinds, child
    /// nodes with a greater crit bit than their parent's).
    #[error("corrupt tree node at crit {crit} (prefix {}) in context {}: {len} bytes, not two valid children", to_hex0x(.prefix), to_hex0x(.context))]
    CorruptNode {
        context: [u8; 32],
        crit: u8,
        prefix: [u8; 32],
        len: usize,
    },
    /// The root entry is not one well-formed child.
    #[error("corrupt tree root entry in context {}: {len} bytes, not one valid child", to_hex0x(.context))]
    CorruptRoot { context: [u8; 32], len: usize },
    /// A node's child is a branching node whose entry is missing.
    #[error("tree node missing at crit {crit} (prefix {}) in context {}", to_hex0x(.prefix), to_hex0x(.context))]
    MissingNode {
        context: [u8; 32],
        crit: u8,
        prefix: [u8; 32],
    },
    /// A node's hash was asked for, or it was about to be stored, before [`refresh`]
    /// computed it.
    #[error("tree node at crit {crit} (prefix {}) in context {} is not hashed yet", to_hex0x(.prefix), to_hex0x(.context))]
    Unhashed {
        context: [u8; 32],
        crit: u8,
        prefix: [u8; 32],
    },
    /// A tree entry not hashed yet was about to be stored: a write was not followed by a
    /// refresh. Nothing of the batch is kept.
    #[error("a tree entry was about to be stored before its hashes were computed")]
    StaleEntry,
    /// The tree and the pair table disagree on whether a key is present.
    #[error("tree and pairs disagree on key {} in context {}", to_hex0x(.key), to_hex0x(.context))]
    Inconsistent { context: [u8; 32], key: [u8; 32] },
}

cmesh_common::redb_errors_into!(MerkleError, MerkleError::Store);

/// Hash of a subtree holding the single pair (key, value): keccak256(0x00 ‖ key ‖ keccak256(value)).
pub fn leaf_hash(key: &[u8; 32], value_hash: &[u8; 32]) -> [u8; 32] {
    keccak256_parts(&[&[LEAF_TAG], key, value_hash])
}

/// Hash of a subtree holding two or more pairs whose keys first differ at bit `crit`:
/// keccak256(0x01 ‖ crit ‖ left ‖ right), `left` holding the keys with bit `crit` = 0.
pub fn node_hash(crit: u8, left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    keccak256_parts(&[&[NODE_TAG, crit], left, right])
}

/// The key of a [`NODES`](crate::tables::NODES) entry, inline (a cache holds many): a
/// context's root entry (the bare context id) or one of its node entries (context ++
/// prefix ++ crit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryKey {
    len: u8,
    bytes: [u8; 65],
}

impl EntryKey {
    fn root(context: &[u8; 32]) -> Self {
        let mut bytes = [0u8; 65];
        bytes[..32].copy_from_slice(context);
        EntryKey { len: 32, bytes }
    }

    fn node(context: &[u8; 32], crit: u8, prefix: &[u8; 32]) -> Self {
        let mut bytes = [0u8; 65];
        bytes[..32].copy_from_slice(context);
        bytes[32..64].copy_from_slice(prefix);
        bytes[64] = crit;
        EntryKey { len: 65, bytes }
    }

    /// The key as stored in [`NODES`](crate::tables::NODES).
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Read access to the [`NODES`](crate::tables::NODES) entries. Reads take `&mut self`
/// because a cache in front of the table remembers what it read.
pub trait NodeSource {
    /// `read` applied to the entry under `key` (`None` if there is none).
    fn read_entry<R>(&mut self, key: &EntryKey, read: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, MerkleError>;
}

/// Read and write access to the [`NODES`](crate::tables::NODES) entries: the redb table
/// itself, or a cache in front of it.
pub trait NodeStore: NodeSource {
    fn insert_entry(&mut self, key: &EntryKey, value: &[u8]) -> Result<(), MerkleError>;
    /// Removes the entry under `key`, if there is one.
    fn remove_entry(&mut self, key: &EntryKey) -> Result<(), MerkleError>;
    /// Removes every entry whose key starts with `context`: the context's root entry and
    /// all its node entries.
    fn remove_context(&mut self, context: &[u8; 32]) -> Result<(), MerkleError>;
}

impl NodeSource for Table<'_, &'static [u8], &'static [u8]> {
    fn read_entry<R>(&mut self, key: &EntryKey, read: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, MerkleError> {
        read_table_entry(self, key, read)
    }
}

impl NodeStore for Table<'_, &'static [u8], &'static [u8]> {
    fn insert_entry(&mut self, key: &EntryKey, value: &[u8]) -> Result<(), MerkleError> {
        self.insert(key.as_slice(), value)?;
        Ok(())
    }

    fn remove_entry(&mut self, key: &EntryKey) -> Result<(), MerkleError> {
        self.remove(key.as_slice())?;
        Ok(())
    }

    fn remove_context(&mut self, context: &[u8; 32]) -> Result<(), MerkleError> {
        // The root entry (the bare context id) sorts first, then the node entries.
        let mut high = [0xffu8; 65];
        high[..32].copy_from_slice(context);
        self.retain_in::<&[u8], _>(context.as_slice()..=high.as_slice(), |_, _| false)?;
        Ok(())
    }
}

/// A table behind a shared reference ([`root`] and [`prove`] only read) as a [`NodeSource`].
struct ReadOnly<'a, T>(&'a T);

impl<T: ReadableTable<&'static [u8], &'static [u8]>> NodeSource for ReadOnly<'_, T> {
    fn read_entry<R>(&mut self, key: &EntryKey, read: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, MerkleError> {
        read_table_entry(self.0, key, read)
    }
}

fn read_table_entry<R>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &EntryKey,
    read: impl FnOnce(Option<&[u8]>) -> R,
) -> Result<R, MerkleError> {
    let entry = table.get(key.as_slice())?;
    Ok(read(entry.as_ref().map(|entry| entry.value())))
}

/// Sets (`Some`) or removes (`None`) `key` in `kv` and updates the tree; returns the
/// context's new root. Writing the value a key already has, or removing an absent key,
/// changes nothing. On an error the tables may be half updated: abort the transaction
/// (and drop a cache the tree was updated through).
pub fn set(
    kv: &mut Table<'_, &'static [u8], &'static [u8]>,
    nodes: &mut impl NodeStore,
    context: &[u8; 32],
    key: &[u8; 32],
    value: Option<&[u8]>,
) -> Result<[u8; 32], MerkleError> {
    write(kv, nodes, context, key, value)?;
    refresh(nodes, context)
}

/// [`set`] without hashing: the nodes on the key's path are left stale until [`refresh`].
/// Answers the value the key had (what undoing the write restores).
pub fn write(
    kv: &mut Table<'_, &'static [u8], &'static [u8]>,
    nodes: &mut impl NodeStore,
    context: &[u8; 32],
    key: &[u8; 32],
    value: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, MerkleError> {
    let full_key = kv_key(context, key);
    let old = match value {
        Some(value) => kv.insert(full_key.as_slice(), value)?,
        None => kv.remove(full_key.as_slice())?,
    }
    .map(|old| old.value().to_vec());
    if old.as_deref() != value {
        update_tree(nodes, context, key, value)?;
    }
    Ok(old)
}

/// Hashes the context's stale nodes, each once, children before parents, and answers its
/// root. Cheap when nothing is stale: it reads the root entry.
pub fn refresh(nodes: &mut impl NodeStore, context: &[u8; 32]) -> Result<[u8; 32], MerkleError> {
    let Some(top) = read_root(nodes, context)? else {
        return Ok(EMPTY_ROOT);
    };
    let fresh = hashed(nodes, context, top)?;
    if fresh != top {
        nodes.insert_entry(&EntryKey::root(context), fresh.encode().as_slice())?;
    }
    fresh.hash(context)
}

/// `child` with its hash computed, and the entries below it that were stale rewritten
/// with theirs. Recursion goes at most 256 deep: crits grow strictly downwards.
fn hashed(nodes: &mut impl NodeStore, context: &[u8; 32], child: Child) -> Result<Child, MerkleError> {
    let Child::Stale { crit, prefix } = child else {
        return Ok(child);
    };
    let read = read_node(nodes, context, crit, &prefix)?;
    let mut children = read;
    for child in &mut children {
        *child = hashed(nodes, context, *child)?;
    }
    // Its entry already holds its children as they are when none of them was stale.
    if children != read {
        nodes.insert_entry(
            &EntryKey::node(context, crit, &prefix),
            encode_children(&children).as_slice(),
        )?;
    }
    Child::node(context, crit, prefix, &children)
}

/// Puts the new value's leaf (or its absence) into the tree; the pair table already
/// holds the change. The nodes above it are marked stale, up to the first one that is
/// already: its ancestors are too, since marks are only ever made up to the top.
fn update_tree(
    nodes: &mut impl NodeStore,
    context: &[u8; 32],
    key: &[u8; 32],
    value: Option<&[u8]>,
) -> Result<(), MerkleError> {
    let (mut path, end) = descend(nodes, context, key)?;
    // The child that replaces `end` in its parent (or at the top).
    let mut current = match (value, end) {
        (Some(value), end) => {
            let leaf = Child::Leaf {
                key: *key,
                hash: leaf_hash(key, &keccak256(value)),
            };
            match end {
                None => leaf,
                Some(Child::Leaf { key: found, .. }) if found == *key => leaf,
                // `end` is a leaf of another key, or a node whose prefix the key leaves
                // before its crit: both go under a new branching node where they part.
                Some(other) => {
                    let crit = common_prefix_bits(key, other.label()) as u8;
                    let prefix = with_suffix(key, usize::from(crit), 0x00);
                    let mut children = [other, other];
                    children[usize::from(bit(key, crit))] = leaf;
                    nodes.insert_entry(
                        &EntryKey::node(context, crit, &prefix),
                        encode_children(&children).as_slice(),
                    )?;
                    Child::Stale { crit, prefix }
                }
            }
        }
        (None, Some(Child::Leaf { key: found, .. })) if found == *key => match path.pop() {
            None => {
                nodes.remove_entry(&EntryKey::root(context))?;
                return Ok(());
            }
            // The leaf's parent goes; its other child takes the parent's place.
            Some(parent) => {
                nodes.remove_entry(&EntryKey::node(context, parent.crit, &parent.prefix))?;
                parent.children[1 - parent.side]
            }
        },
        (None, _) => {
            return Err(MerkleError::Inconsistent {
                context: *context,
                key: *key,
            })
        }
    };
    for node in path.iter_mut().rev() {
        if node.children[node.side] == current {
            return Ok(());
        }
        node.children[node.side] = current;
        nodes.insert_entry(
            &EntryKey::node(context, node.crit, &node.prefix),
            encode_children(&node.children).as_slice(),
        )?;
        current = Child::Stale {
            crit: node.crit,
            prefix: node.prefix,
        };
    }
    nodes.insert_entry(&EntryKey::root(context), current.encode().as_slice())?;
    Ok(())
}

/// The context's current root ([`EMPTY_ROOT`] if it has no pairs). The root entry holds
/// it: the pair table is not read.
pub fn root(
    nodes: &impl ReadableTable<&'static [u8], &'static [u8]>,
    context: &[u8; 32],
) -> Result<[u8; 32], MerkleError> {
    root_in(&mut ReadOnly(nodes), context)
}

fn root_in(nodes: &mut impl NodeSource, context: &[u8; 32]) -> Result<[u8; 32], MerkleError> {
    read_root(nodes, context)?.map_or(Ok(EMPTY_ROOT), |top| top.hash(context))
}

/// Proof of `key`'s value (or absence) against the context's current root.
pub fn prove(
    kv: &impl ReadableTable<&'static [u8], &'static [u8]>,
    nodes: &impl ReadableTable<&'static [u8], &'static [u8]>,
    context: &[u8; 32],
    key: &[u8; 32],
) -> Result<Proof, MerkleError> {
    let mut nodes = ReadOnly(nodes);
    let (mut path, end) = descend(&mut nodes, context, key)?;
    let Some(mut end) = end else {
        return Ok(Proof {
            steps: Vec::new(),
            end: None,
        });
    };
    // If the key leaves the tree above a node, go on down that node's left side to some
    // leaf: it shows that the key's position is inside the node, which it is not.
    let (found, hash) = loop {
        match end {
            Child::Leaf { key, hash } => break (key, hash),
            Child::Stale { crit, prefix } => {
                return Err(MerkleError::Unhashed {
                    context: *context,
                    crit,
                    prefix,
                })
            }
            Child::Node { crit, prefix, .. } => {
                let children = read_node(&mut nodes, context, crit, &prefix)?;
                end = children[0];
                path.push(PathNode {
                    crit,
                    prefix,
                    children,
                    side: 0,
                });
            }
        }
    };
    let value = kv
        .get(kv_key(context, &found).as_slice())?
        .ok_or(MerkleError::Inconsistent {
            context: *context,
            key: found,
        })?;
    let value_hash = keccak256(value.value());
    if leaf_hash(&found, &value_hash) != hash {
        return Err(MerkleError::Inconsistent {
            context: *context,
            key: found,
        });
    }
    let steps = path
        .iter()
        .map(|node| {
            Ok(Step {
                crit: node.crit,
                sibling: node.children[1 - node.side].hash(context)?,
            })
        })
        .collect::<Result<_, MerkleError>>()?;
    Ok(Proof {
        steps,
        end: Some(ProofLeaf { key: found, value_hash }),
    })
}

/// Proof of one key's value or absence: a root-to-leaf path of the tree, ending at the
/// key's own leaf or, for an absent key, at a leaf of a subtree the key would have to be in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The branching nodes on the path, from the root down.
    pub steps: Vec<Step>,
    /// The leaf the path ends at; `None` only for an empty tree.
    pub end: Option<ProofLeaf>,
}

/// One branching node on a proof's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The node's crit bit; the path goes to the side of the end leaf's bit `crit`.
    pub crit: u8,
    /// Hash of the node's other child.
    pub sibling: [u8; 32],
}

/// The pair at the end of a proof's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofLeaf {
    pub key: [u8; 32],
    pub value_hash: [u8; 32],
}

impl Proof {
    /// True if this proves that, under `root`, `key` holds `value` (`None`: is absent).
    pub fn verify(&self, root: &[u8; 32], key: &[u8; 32], value: Option<&[u8]>) -> bool {
        let Some(end) = &self.end else {
            return self.steps.is_empty() && *root == EMPTY_ROOT && value.is_none();
        };
        if !self.steps.windows(2).all(|pair| pair[0].crit < pair[1].crit) {
            return false;
        }
        let claim_fits = match value {
            Some(value) => end.key == *key && end.value_hash == keccak256(value),
            // The key follows the path while it agrees with the end leaf, so it parts from
            // it at the first node whose crit is at least `parted`. A node with a greater
            // crit holds only keys agreeing with the leaf at bit `parted`, so not the key;
            // at crit == `parted` the key would be in the sibling, which is not opened.
            None => {
                let parted = common_prefix_bits(key, &end.key);
                end.key != *key
                    && self
                        .steps
                        .iter()
                        .find(|step| usize::from(step.crit) >= parted)
                        .is_none_or(|step| usize::from(step.crit) > parted)
            }
        };
        if !claim_fits {
            return false;
        }
        let hash = self
            .steps
            .iter()
            .rev()
            .fold(leaf_hash(&end.key, &end.value_hash), |hash, step| {
                if bit(&end.key, step.crit) {
                    node_hash(step.crit, &step.sibling, &hash)
                } else {
                    node_hash(step.crit, &hash, &step.sibling)
                }
            });
        hash == *root
    }
}

/// Removes every pair and tree entry of `context` (used when a node leaves a context).
/// Through a cache, its cached entries of the context go too.
pub fn clear(
    kv: &mut Table<'_, &'static [u8], &'static [u8]>,
    nodes: &mut impl NodeStore,
    context: &[u8; 32],
) -> Result<(), MerkleError> {
    let (low, high) = (kv_key(context, &[0; 32]), kv_key(context, &[0xff; 32]));
    kv.retain_in::<&[u8], _>(low.as_slice()..=high.as_slice(), |_, _| false)?;
    nodes.remove_context(context)
}

/// Reference: the root of a set of pairs computed from scratch (tests, and checking a store).
pub fn root_of(pairs: &BTreeMap<[u8; 32], Vec<u8>>) -> [u8; 32] {
    let leaves: Vec<([u8; 32], [u8; 32])> = pairs.iter().map(|(key, value)| (*key, keccak256(value))).collect();
    hash_of_sorted(&leaves)
}

/// Hash of the subtree holding `leaves` (sorted by key, distinct).
fn hash_of_sorted(leaves: &[([u8; 32], [u8; 32])]) -> [u8; 32] {
    match leaves {
        [] => EMPTY_ROOT,
        [(key, value_hash)] => leaf_hash(key, value_hash),
        [(first, _), .., (last, _)] => {
            // The keys in between share every bit the first and the last share.
            let crit = common_prefix_bits(first, last) as u8;
            let split = leaves.partition_point(|(key, _)| !bit(key, crit));
            node_hash(
                crit,
                &hash_of_sorted(&leaves[..split]),
                &hash_of_sorted(&leaves[split..]),
            )
        }
    }
}

/// A subtree as its parent (or the root entry) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    Leaf {
        key: [u8; 32],
        hash: [u8; 32],
    },
    Node {
        crit: u8,
        prefix: [u8; 32],
        hash: [u8; 32],
    },
    /// A branching node changed since it was last hashed (see [`refresh`]).
    Stale {
        crit: u8,
        prefix: [u8; 32],
    },
}

impl Child {
    /// The branching node at `crit`/`prefix` over `children`, hashed.
    fn node(context: &[u8; 32], crit: u8, prefix: [u8; 32], children: &[Child; 2]) -> Result<Child, MerkleError> {
        Ok(Child::Node {
            crit,
            prefix,
            hash: node_hash(crit, &children[0].hash(context)?, &children[1].hash(context)?),
        })
    }

    /// Its hash; an error for a stale node, whose hash is not known yet.
    fn hash(&self, context: &[u8; 32]) -> Result<[u8; 32], MerkleError> {
        match self {
            Child::Leaf { hash, .. } | Child::Node { hash, .. } => Ok(*hash),
            Child::Stale { crit, prefix } => Err(MerkleError::Unhashed {
                context: *context,
                crit: *crit,
                prefix: *prefix,
            }),
        }
    }

    /// The crit and prefix of a branching node, hashed or not.
    fn branch(&self) -> Option<(u8, [u8; 32])> {
        match *self {
            Child::Leaf { .. } => None,
            Child::Node { crit, prefix, .. } | Child::Stale { crit, prefix } => Some((crit, prefix)),
        }
    }

    /// A leaf's key or a node's prefix: every key below agrees with it on the bits before
    /// the node's crit (all bits for a leaf).
    fn label(&self) -> &[u8; 32] {
        match self {
            Child::Leaf { key, .. } => key,
            Child::Node { prefix, .. } | Child::Stale { prefix, .. } => prefix,
        }
    }

    /// Kind (0 leaf, 1 node, 2 stale node) ++ crit ++ hash (zeros while stale) ++ label.
    fn encode(&self) -> [u8; CHILD_LEN] {
        let mut out = [0u8; CHILD_LEN];
        match self {
            Child::Leaf { hash, .. } => out[2..34].copy_from_slice(hash),
            Child::Node { crit, hash, .. } => {
                out[0] = 1;
                out[1] = *crit;
                out[2..34].copy_from_slice(hash);
            }
            Child::Stale { crit, .. } => {
                out[0] = STALE_TAG;
                out[1] = *crit;
            }
        }
        out[34..].copy_from_slice(self.label());
        out
    }

    /// The child encoded in `bytes` (exactly [`CHILD_LEN`] of them); `None` if malformed.
    fn decode(bytes: &[u8]) -> Option<Child> {
        let (head, rest) = bytes.split_first_chunk::<2>()?;
        let (hash, label) = rest.split_first_chunk::<32>()?;
        let label = <[u8; 32]>::try_from(label).ok()?;
        match *head {
            [0, 0] => Some(Child::Leaf {
                key: label,
                hash: *hash,
            }),
            [1, crit] => Some(Child::Node {
                crit,
                prefix: label,
                hash: *hash,
            }),
            [STALE_TAG, crit] if *hash == [0; 32] => Some(Child::Stale { crit, prefix: label }),
            _ => None,
        }
    }
}

fn encode_children(children: &[Child; 2]) -> [u8; 2 * CHILD_LEN] {
    let mut out = [0u8; 2 * CHILD_LEN];
    out[..CHILD_LEN].copy_from_slice(&children[0].encode());
    out[CHILD_LEN..].copy_from_slice(&children[1].encode());
    out
}

/// A branching node on a key's path, as read, and the side the path goes on.
struct PathNode {
    crit: u8,
    prefix: [u8; 32],
    children: [Child; 2],
    side: usize,
}

/// The branching nodes on `key`'s path from the top, and where the path stops: at a leaf
/// (the key's own or another's), at a node whose prefix the key leaves before its crit, or
/// `None` for an empty tree.
fn descend(
    nodes: &mut impl NodeSource,
    context: &[u8; 32],
    key: &[u8; 32],
) -> Result<(Vec<PathNode>, Option<Child>), MerkleError> {
    let mut path = Vec::new();
    let Some(mut child) = read_root(nodes, context)? else {
        return Ok((path, None));
    };
    while let Some((crit, prefix)) = child.branch() {
        if common_prefix_bits(key, &prefix) < usize::from(crit) {
            break;
        }
        let children = read_node(nodes, context, crit, &prefix)?;
        let side = usize::from(bit(key, crit));
        child = children[side];
        path.push(PathNode {
            crit,
            prefix,
            children,
            side,
        });
    }
    Ok((path, Some(child)))
}

/// The child in the context's root entry; `None` for an empty tree.
fn read_root(nodes: &mut impl NodeSource, context: &[u8; 32]) -> Result<Option<Child>, MerkleError> {
    nodes.read_entry(&EntryKey::root(context), |entry| {
        entry
            .map(|bytes| {
                Child::decode(bytes).ok_or(MerkleError::CorruptRoot {
                    context: *context,
                    len: bytes.len(),
                })
            })
            .transpose()
    })?
}

/// The two children of the branching node at `crit`/`prefix`. Child nodes must have a
/// greater crit, so a damaged store cannot send a descent round in circles.
fn read_node(
    nodes: &mut impl NodeSource,
    context: &[u8; 32],
    crit: u8,
    prefix: &[u8; 32],
) -> Result<[Child; 2], MerkleError> {
    let valid = |child: &Child| child.branch().is_none_or(|(below, _)| below > crit);
    nodes.read_entry(&EntryKey::node(context, crit, prefix), |entry| {
        let bytes = entry.ok_or(MerkleError::MissingNode {
            context: *context,
            crit,
            prefix: *prefix,
        })?;
        bytes
            .split_at_checked(CHILD_LEN)
            .and_then(|(left, right)| Some([Child::decode(left)?, Child::decode(right)?]))
            .filter(|children| children.iter().all(valid))
            .ok_or(MerkleError::CorruptNode {
                context: *context,
                crit,
                prefix: *prefix,
                len: bytes.len(),
            })
    })?
}

/// The pair table's key of `key` in `context` (the layout is the store's).
fn kv_key(context: &[u8; 32], key: &[u8; 32]) -> [u8; 64] {
    crate::store::kv_key(&crate::ids::Id(*context), key)
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

/// Bit `index` of `key`, bit 0 being the most significant bit of byte 0.
fn bit(key: &[u8; 32], index: u8) -> bool {
    let index = usize::from(index);
    (key[index / 8] >> (7 - index % 8)) & 1 == 1
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
        key[31] = 1;
        assert!(bit(&key, 0) && !bit(&key, 1) && bit(&key, 2));
        assert!(bit(&key, 255) && !bit(&key, 254));
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
        // Two keys differing first at bit 0: one node over two leaves.
        let (left, right) = ([0u8; 32], [0xffu8; 32]);
        let two = BTreeMap::from([(left, b"a".to_vec()), (right, b"b".to_vec())]);
        assert_eq!(
            root_of(&two),
            node_hash(
                0,
                &leaf_hash(&left, &keccak256(b"a")),
                &leaf_hash(&right, &keccak256(b"b"))
            )
        );
        // Three keys: 00…, 00…01 (crit 255 between them) and 40… (crit 1 above them).
        let (a, mut b, mut c) = ([0u8; 32], [0u8; 32], [0u8; 32]);
        b[31] = 1;
        c[0] = 0x40;
        let three = BTreeMap::from([(a, vec![]), (b, vec![1]), (c, vec![2])]);
        let low = node_hash(255, &leaf_hash(&a, &keccak256(&[])), &leaf_hash(&b, &keccak256(&[1])));
        assert_eq!(root_of(&three), node_hash(1, &low, &leaf_hash(&c, &keccak256(&[2]))));
    }

    #[test]
    fn children_encode_and_decode() {
        let leaf = Child::Leaf {
            key: [3; 32],
            hash: [4; 32],
        };
        let node = Child::Node {
            crit: 200,
            prefix: [5; 32],
            hash: [6; 32],
        };
        let stale = Child::Stale {
            crit: 9,
            prefix: [7; 32],
        };
        for child in [leaf, node, stale] {
            let bytes = child.encode();
            assert_eq!(Child::decode(&bytes), Some(child));
            assert_eq!(Child::decode(&bytes[..65]), None);
        }
        assert!(is_stale_entry(&[node.encode(), stale.encode()].concat()));
        assert!(!is_stale_entry(&[node.encode(), leaf.encode()].concat()));
        let mut hashed_stale = stale.encode();
        hashed_stale[2] = 1;
        assert_eq!(Child::decode(&hashed_stale), None, "a stale node has no hash");
        assert_eq!(leaf.encode()[..3], [0, 0, 4]);
        assert_eq!(node.encode()[..3], [1, 200, 6]);
        let mut bad = leaf.encode();
        bad[1] = 7;
        assert_eq!(Child::decode(&bad), None, "a leaf has no crit");
        bad[0] = 2;
        assert_eq!(Child::decode(&bad), None, "unknown kind");
    }

    #[test]
    fn malformed_proofs_are_rejected() {
        let leaf = ProofLeaf {
            key: [0; 32],
            value_hash: keccak256(b""),
        };
        let no_end = Proof {
            steps: vec![Step {
                crit: 0,
                sibling: [0; 32],
            }],
            end: None,
        };
        assert!(!no_end.verify(&EMPTY_ROOT, &[0; 32], None));
        let empty = Proof {
            steps: vec![],
            end: None,
        };
        assert!(empty.verify(&EMPTY_ROOT, &[0; 32], None));
        assert!(!empty.verify(&EMPTY_ROOT, &[0; 32], Some(b"")));
        assert!(!empty.verify(&[1; 32], &[0; 32], None));
        // Crits must increase strictly, even where the hashes would match.
        let step = Step {
            crit: 9,
            sibling: [1; 32],
        };
        let repeated = Proof {
            steps: vec![step.clone(), step],
            end: Some(leaf.clone()),
        };
        let top = node_hash(9, &leaf_hash(&leaf.key, &leaf.value_hash), &[1; 32]);
        let root = node_hash(9, &top, &[1; 32]);
        assert!(!repeated.verify(&root, &[0; 32], Some(b"")));
    }
}
