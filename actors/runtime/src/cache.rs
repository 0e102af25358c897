//! Compiled modules, kept so that a call never compiles: a bounded in-memory map (least
//! recently used evicted first) over an optional on-disk cache that survives restarts.
//!
//! A disk entry is two files, `<app>.wasmer` (the serialized artifact) and `<app>.keccak`
//! (keccak256 of it). The hash is checked before wasmer sees the bytes, and wasmer then
//! loads the file with its validating deserializer; an entry failing either is deleted
//! and rebuilt from the wasm. Entries live in a directory named after the engine settings
//! (wasmer version, CPU, gas schedule, limits), so artifacts built under other settings
//! are never loaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use cmesh_common::hash::keccak256;
use wasmer::{Engine, ExternType, Module};

use super::host::{signature_text, Hex, HostFn, IMPORT_MODULE};
use super::instrument::{CALL_DEPTH_EXPORT, POINTS_EXHAUSTED_EXPORT, REMAINING_POINTS_EXPORT};
use super::DeployError;

/// A module ready to be instantiated, with what calls need to know about it.
pub(crate) struct Prepared {
    /// The engine the module was compiled or loaded with; its stores run the module.
    pub engine: Engine,
    pub module: Module,
    /// The host function behind each import, in import order.
    pub imports: Vec<HostFn>,
    /// Callable methods, sorted.
    pub methods: Vec<String>,
}

impl Prepared {
    /// Checks a compiled (or deserialized) module's interface and records it.
    pub(crate) fn new(engine: Engine, module: Module) -> Result<Prepared, DeployError> {
        let mut imports = Vec::new();
        for import in module.imports() {
            let unknown = || DeployError::UnknownImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            };
            let host = (import.module() == IMPORT_MODULE)
                .then(|| HostFn::by_name(import.name()))
                .flatten()
                .ok_or_else(unknown)?;
            let ExternType::Function(ty) = import.ty() else {
                return Err(unknown());
            };
            let (params, results) = host.signature();
            let same = |types: &[wasmer::Type], vals: &[super::host::Val]| {
                types.len() == vals.len()
                    && types.iter().zip(vals).all(|(t, v)| {
                        matches!(
                            (t, v),
                            (wasmer::Type::I32, super::host::Val::I32) | (wasmer::Type::I64, super::host::Val::I64)
                        )
                    })
            };
            if !same(ty.params(), params) || !same(ty.results(), results) {
                return Err(DeployError::ImportType {
                    name: import.name().to_string(),
                    expected: host.signature_text(),
                    found: type_text(ty),
                });
            }
            imports.push(host);
        }

        let mut methods = Vec::new();
        let (mut memory, mut remaining, mut exhausted, mut depth) = (false, false, false, false);
        for export in module.exports() {
            match export.ty() {
                ExternType::Function(ty) => {
                    if !ty.params().is_empty() || !ty.results().is_empty() {
                        return Err(DeployError::BadExport {
                            name: export.name().to_string(),
                            ty: type_text(ty),
                        });
                    }
                    if !export.name().starts_with('_') {
                        methods.push(export.name().to_string());
                    }
                }
                ExternType::Memory(_) if export.name() == "memory" => memory = true,
                ExternType::Global(_) => match export.name() {
                    REMAINING_POINTS_EXPORT => remaining = true,
                    POINTS_EXHAUSTED_EXPORT => exhausted = true,
                    CALL_DEPTH_EXPORT => depth = true,
                    _ => {}
                },
                _ => {}
            }
        }
        if !memory {
            return Err(DeployError::NoMemory);
        }
        if !(remaining && exhausted && depth) {
            return Err(DeployError::Compile(
                "compiled module lacks the metering globals".into(),
            ));
        }
        methods.sort();
        methods.dedup();
        Ok(Prepared {
            engine,
            module,
            imports,
            methods,
        })
    }

    pub(crate) fn has_method(&self, method: &str) -> bool {
        self.methods.binary_search_by(|m| m.as_str().cmp(method)).is_ok()
    }
}

fn type_text(ty: &wasmer::FunctionType) -> String {
    let params: Vec<String> = ty.params().iter().map(|t| t.to_string()).collect();
    let results: Vec<String> = ty.results().iter().map(|t| t.to_string()).collect();
    signature_text(params.iter().map(String::as_str), results.iter().map(String::as_str))
}

struct Slot {
    prepared: Arc<Prepared>,
    last_used: AtomicU64,
}

/// The in-memory cache.
pub(crate) struct MemoryCache {
    slots: RwLock<HashMap<[u8; 32], Slot>>,
    clock: AtomicU64,
    capacity: usize,
}

impl MemoryCache {
    pub(crate) fn new(capacity: usize) -> Self {
        MemoryCache {
            slots: RwLock::new(HashMap::new()),
            clock: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn get(&self, app: &[u8; 32]) -> Option<Arc<Prepared>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let slot = slots.get(app)?;
        slot.last_used
            .store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(slot.prepared.clone())
    }

    pub(crate) fn insert(&self, app: [u8; 32], prepared: Arc<Prepared>) {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        slots.insert(
            app,
            Slot {
                prepared,
                last_used: AtomicU64::new(now),
            },
        );
        while slots.len() > self.capacity {
            let oldest = slots
                .iter()
                .filter(|(key, _)| **key != app)
                .min_by_key(|(_, slot)| slot.last_used.load(Ordering::Relaxed))
                .map(|(key, _)| *key);
            match oldest {
                Some(key) => {
                    slots.remove(&key);
                }
                None => break,
            }
        }
    }
}

/// The on-disk cache.
pub(crate) struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    /// `root/<settings id>`, created if missing.
    pub(crate) fn open(root: &Path, fingerprint: &str) -> std::io::Result<DiskCache> {
        let id = keccak256(fingerprint.as_bytes());
        let dir = root.join(format!("wasmer-7.4.2-{}", Hex(&id[..8])));
        std::fs::create_dir_all(&dir)?;
        Ok(DiskCache { dir })
    }

    fn paths(&self, app: &[u8; 32]) -> (PathBuf, PathBuf) {
        let name = Hex(app).to_string();
        (
            self.dir.join(format!("{name}.wasmer")),
            self.dir.join(format!("{name}.keccak")),
        )
    }

    /// The cached module of `app`, or `None` if there is none or it does not verify (then
    /// it is deleted).
    pub(crate) fn load(&self, app: &[u8; 32], engine: &Engine) -> Option<Module> {
        let (artifact, hash) = self.paths(app);
        let bytes = match std::fs::read(&artifact) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %artifact.display(), "cannot read cached module: {e}");
                return None;
            }
        };
        let verified = std::fs::read(&hash)
            .map(|stored| stored.as_slice() == keccak256(&bytes).as_slice())
            .unwrap_or(false);
        if !verified {
            tracing::warn!(path = %artifact.display(), "cached module fails its hash check; rebuilding it");
            self.remove(app);
            return None;
        }
        // SAFETY: the file holds an artifact this node serialized (its keccak256 matches the
        // one written next to it), and `deserialize_from_file` also validates the artifact's
        // layout. The cache directory is private to the node, which only ever replaces its
        // files by rename, so the bytes wasmer maps are the ones just hashed.
        match unsafe { Module::deserialize_from_file(engine, &artifact) } {
            Ok(module) => Some(module),
            Err(e) => {
                tracing::warn!(path = %artifact.display(), "cached module does not load ({e}); rebuilding it");
                self.remove(app);
                None
            }
        }
    }

    /// Writes `module` for `app`. Failures are logged: the cache is only an optimization.
    pub(crate) fn store(&self, app: &[u8; 32], module: &Module) {
        let (artifact, hash) = self.paths(app);
        let bytes = match module.serialize() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(app = %Hex(app), "cannot serialize module: {e}");
                return;
            }
        };
        let digest = keccak256(&bytes);
        if let Err(e) = write_atomically(&artifact, &bytes).and_then(|()| write_atomically(&hash, &digest)) {
            tracing::warn!(path = %artifact.display(), "cannot write cached module: {e}");
            self.remove(app);
        }
    }

    fn remove(&self, app: &[u8; 32]) {
        let (artifact, hash) = self.paths(app);
        for path in [artifact, hash] {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), "cannot remove cached module: {e}");
                }
            }
        }
    }
}

/// Writes a temporary file next to `path` and renames it over `path`, so that readers see
/// the old or the new file, never a partial one.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
