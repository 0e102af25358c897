//! Runs contracts with wasmer, deterministically and within limits (see `docs/ABI.md`).
//!
//! [`Runtime::prepare`] validates and compiles a module once, at deploy time, and caches
//! the compiled code in memory and on disk; [`Runtime::call`] instantiates it afresh for
//! every call (so no state survives between calls except storage) and runs one method
//! with a gas limit, returning its output and effects without applying them: the caller
//! commits the write set and events only if the call succeeded.
//!
//! Layout: `engine` (compiler, features, metering, limits), `instrument` (bulk-operator gas
//! and the call-depth limit), `memory` (pooled linear memories), `validate` (deploy
//! checks), `host` (host functions), `gas` (prices), `cache` (compiled modules), `error`.

mod cache;
mod engine;
mod error;
pub mod gas;
mod host;
mod instrument;
mod map_state;
#[cfg(unix)]
mod memory;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cmesh_common::hash::keccak256;
use wasmer::{Extern, FunctionEnv, Instance, Module, Store, TypedFunction, Value};

pub use error::{CallError, DeployError, RuntimeError};
pub use map_state::MapState;

use cache::{DiskCache, MemoryCache, Prepared};
use engine::EngineSettings;
use host::{Hex, HostEnv, HostError};
use instrument::{CALL_DEPTH_EXPORT, MAX_CALL_DEPTH, POINTS_EXHAUSTED_EXPORT, REMAINING_POINTS_EXPORT};

const MIB: u64 = 1 << 20;
const PAGE: u64 = 1 << 16;

/// Limits and caching of a [`Runtime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Gas of a call whose [`Call::gas_limit`] is `None`.
    pub gas_limit: u64,
    /// Most linear memory an instance may have (rounded down to 64 KiB pages).
    pub memory_limit_bytes: u64,
    /// Largest module accepted by [`Runtime::prepare`].
    pub max_module_bytes: usize,
    /// Directory of the on-disk compiled-module cache; `None` keeps modules in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Most compiled modules kept in memory.
    pub max_cached_modules: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            gas_limit: 100_000_000,
            memory_limit_bytes: 64 * MIB,
            max_module_bytes: 4 * MIB as usize,
            cache_dir: None,
            max_cached_modules: 64,
        }
    }
}

/// What [`Runtime::prepare`] learned about a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    /// Callable method names, sorted (exports starting with `_` are not callable).
    pub methods: Vec<String>,
}

/// One method call.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub method: &'a str,
    /// The arguments, as the caller sent them (JSON text); the SDK parses them.
    pub input: &'a [u8],
    pub caller: [u8; 20],
    pub context: [u8; 32],
    /// `None` for a view: no writes, removes or emits; `tx_id()` gives zeros.
    pub tx_id: Option<[u8; 32]>,
    pub time_ms: u64,
    /// `None` uses [`RuntimeConfig::gas_limit`].
    pub gas_limit: Option<u64>,
}

/// Read access to the context's committed state (plus whatever the caller already applied
/// in its open write transaction). Implemented by the state actor over redb.
pub trait StateReader {
    fn get(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Entries with start <= key < end (end None = unbounded), in key order, at most `limit`.
    fn range(&self, start: &[u8; 32], end: Option<&[u8; 32]>, limit: usize) -> Result<Vec<Entry>, StorageError>;
}

/// A key and its value, as [`StateReader::range`] returns them.
pub type Entry = ([u8; 32], Vec<u8>);

/// A failure of the state behind a [`StateReader`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

/// What a successful call produced. Nothing of it has been applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub output: Vec<u8>,
    pub gas_used: u64,
    /// The call's final write set, sorted by key: `Some(value)` = set, `None` = removed
    /// (whether or not the key existed). The guest read its own writes during the call.
    pub writes: BTreeMap<[u8; 32], Option<Vec<u8>>>,
    /// In emit order.
    pub events: Vec<AppEvent>,
    pub logs: Vec<String>,
}

/// An event emitted by an app.
#[derive(Debug, Clone, PartialEq)]
pub struct AppEvent {
    pub name: String,
    pub data: serde_json::Value,
}

/// Validates, compiles, caches and runs app modules. Cheap to clone; clones share caches.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: RuntimeConfig,
    max_pages: u32,
    settings: EngineSettings,
    memory: MemoryCache,
    disk: Option<DiskCache>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let pages = config.memory_limit_bytes / PAGE;
        if pages == 0 || pages > 65_536 {
            return Err(RuntimeError::Config(format!(
                "memory_limit_bytes must be between 64 KiB and 4 GiB, got {}",
                config.memory_limit_bytes
            )));
        }
        if config.max_cached_modules == 0 {
            return Err(RuntimeError::Config("max_cached_modules must be at least 1".into()));
        }
        if config.max_module_bytes < 8 {
            return Err(RuntimeError::Config(
                "max_module_bytes is too small for any module".into(),
            ));
        }
        let max_pages = pages as u32;
        let settings = EngineSettings::new(max_pages);
        let disk = match &config.cache_dir {
            Some(dir) => {
                Some(
                    DiskCache::open(dir, &settings.fingerprint()).map_err(|source| RuntimeError::CacheDir {
                        path: dir.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Ok(Runtime {
            inner: Arc::new(Inner {
                memory: MemoryCache::new(config.max_cached_modules),
                config,
                max_pages,
                settings,
                disk,
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Deploy-time validation (size, parses as wasm, imports exactly those of docs/ABI.md
    /// with the right types, every exported function is `() -> ()`, `memory` exported,
    /// declared minimum memory within the limit, no start function), then compiles and
    /// caches (memory + disk) under `app`, replacing what was cached for it. When `app` is
    /// the keccak256 of `wasm` (an app id) and a module of it is cached already, that one
    /// is used: it was compiled from these very bytes, and compiling is most of a deploy
    /// (a joiner that had the module, a node whose cache survived). Returns the callable
    /// method names (sorted; names starting with `_` excluded).
    pub fn prepare(&self, app: &[u8; 32], wasm: &[u8]) -> Result<AppInfo, DeployError> {
        let cached = (keccak256(wasm) == *app).then(|| self.cached(app)).flatten();
        let prepared = match cached {
            Some(prepared) => {
                validate::validate(wasm, &self.limits())?;
                prepared
            }
            None => self.compile(app, wasm)?,
        };
        Ok(AppInfo {
            methods: prepared.methods.clone(),
        })
    }

    /// Runs one method. `load_wasm` is called only when the module is in neither cache
    /// (it is then validated, compiled and cached again).
    pub fn call(
        &self,
        app: &[u8; 32],
        load_wasm: &dyn Fn() -> Result<Vec<u8>, StorageError>,
        call: Call<'_>,
        state: &dyn StateReader,
    ) -> Result<Outcome, CallError> {
        let prepared = self.load(app, load_wasm)?;
        if !prepared.has_method(call.method) {
            return Err(CallError::MethodNotFound {
                method: call.method.to_string(),
                available: prepared.methods.clone(),
            });
        }
        let limit = call.gas_limit.unwrap_or(self.inner.config.gas_limit);
        self.run(app, &prepared, &call, state, limit)
    }

    /// The module of `app` from memory, disk, or compiled from `load_wasm`.
    fn load(
        &self,
        app: &[u8; 32],
        load_wasm: &dyn Fn() -> Result<Vec<u8>, StorageError>,
    ) -> Result<Arc<Prepared>, CallError> {
        if let Some(prepared) = self.cached(app) {
            return Ok(prepared);
        }
        let wasm = load_wasm()?;
        self.compile(app, &wasm).map_err(CallError::Deploy)
    }

    /// The module of `app` from memory, or from disk (then kept in memory too).
    fn cached(&self, app: &[u8; 32]) -> Option<Arc<Prepared>> {
        if let Some(prepared) = self.inner.memory.get(app) {
            return Some(prepared);
        }
        if let Some(disk) = &self.inner.disk {
            let engine = self.inner.settings.engine();
            if let Some(module) = disk.load(app, &engine) {
                match Prepared::new(engine, module) {
                    Ok(prepared) => {
                        let prepared = Arc::new(prepared);
                        self.inner.memory.insert(*app, prepared.clone());
                        return Some(prepared);
                    }
                    Err(e) => {
                        tracing::warn!(app = %Hex(app), "cached module is unusable ({e}); rebuilding it")
                    }
                }
            }
        }
        None
    }

    fn limits(&self) -> validate::Limits {
        validate::Limits {
            max_module_bytes: self.inner.config.max_module_bytes,
            max_pages: self.inner.max_pages,
        }
    }

    fn compile(&self, app: &[u8; 32], wasm: &[u8]) -> Result<Arc<Prepared>, DeployError> {
        validate::validate(wasm, &self.limits())?;
        let engine = self.inner.settings.engine();
        let started = std::time::Instant::now();
        let module = Module::from_binary(&engine, wasm).map_err(|e| DeployError::Compile(e.to_string()))?;
        tracing::debug!(app = %Hex(app), bytes = wasm.len(), elapsed = ?started.elapsed(), "compiled module");
        let prepared = Arc::new(Prepared::new(engine, module)?);
        if let Some(disk) = &self.inner.disk {
            disk.store(app, &prepared.module);
        }
        self.inner.memory.insert(*app, prepared.clone());
        Ok(prepared)
    }

    fn run(
        &self,
        app: &[u8; 32],
        prepared: &Prepared,
        call: &Call<'_>,
        state: &dyn StateReader,
        limit: u64,
    ) -> Result<Outcome, CallError> {
        let internal = |what: &str, e: &dyn std::fmt::Display| CallError::Internal(format!("{what}: {e}"));
        let mut store = Store::new(prepared.engine.clone());
        // SAFETY: `store` owns the environment and is dropped at the end of this function,
        // while `state` is still borrowed; host functions run only inside `call` below, on
        // this thread.
        let env = FunctionEnv::new(&mut store, unsafe { HostEnv::new(*app, call, state) });
        let externs: Vec<Extern> = prepared
            .imports
            .iter()
            .map(|f| Extern::Function(f.function(&mut store, &env)))
            .collect();
        let instance = Instance::new_by_index(&mut store, &prepared.module, &externs).map_err(|e| match e {
            wasmer::InstantiationError::Start(trap) => CallError::Trap(trap.message()),
            e => internal("instantiation failed", &e),
        })?;

        let exports = &instance.exports;
        let memory = exports
            .get_memory("memory")
            .map_err(|e| internal("memory", &e))?
            .clone();
        let remaining = exports
            .get_global(REMAINING_POINTS_EXPORT)
            .map_err(|e| internal("gas", &e))?
            .clone();
        let exhausted = exports
            .get_global(POINTS_EXHAUSTED_EXPORT)
            .map_err(|e| internal("gas", &e))?
            .clone();
        let depth = exports
            .get_global(CALL_DEPTH_EXPORT)
            .map_err(|e| internal("depth", &e))?
            .clone();
        let method: TypedFunction<(), ()> = exports
            .get_typed_function(&store, call.method)
            .map_err(|e| internal("method", &e))?;
        remaining
            .set(&mut store, Value::I64(limit as i64))
            .map_err(|e| internal("gas", &e.message()))?;
        {
            let data = env.as_mut(&mut store);
            data.memory = Some(memory.clone());
            data.remaining = Some(remaining.clone());
            data.exhausted = Some(exhausted.clone());
        }

        let result = method.call(&mut store);

        let out_of_gas = exhausted.get(&mut store).i32() != Some(0);
        let left = remaining.get(&mut store).i64().map_or(0, |v| v as u64);
        let gas_used = if out_of_gas { limit } else { limit.saturating_sub(left) };
        match result {
            Ok(()) => {
                let data = env.as_mut(&mut store);
                Ok(Outcome {
                    output: std::mem::take(&mut data.output),
                    gas_used,
                    writes: std::mem::take(&mut data.writes),
                    events: std::mem::take(&mut data.events),
                    logs: std::mem::take(&mut data.logs),
                })
            }
            Err(trap) => {
                let error = match trap.downcast::<HostError>() {
                    Ok(host) => host_error(host, limit),
                    Err(_) if out_of_gas => CallError::OutOfGas { limit },
                    Err(trap) => {
                        let too_deep = depth.get(&mut store).i32().unwrap_or(0) as u32 > MAX_CALL_DEPTH;
                        let pages = u64::from(memory.view(&store).size().0);
                        match trap.clone().to_trap() {
                            _ if too_deep => CallError::StackExhausted,
                            Some(wasmer::sys::vm::TrapCode::StackOverflow) => CallError::StackExhausted,
                            _ if pages >= u64::from(self.inner.max_pages) => CallError::MemoryLimit {
                                limit_mib: self.inner.config.memory_limit_bytes / MIB,
                            },
                            _ => CallError::Trap(trap.message()),
                        }
                    }
                };
                tracing::debug!(app = %Hex(app), method = call.method, gas_used, "call failed: {error}");
                Err(error)
            }
        }
    }
}

fn host_error(error: HostError, limit: u64) -> CallError {
    match error {
        HostError::OutOfGas => CallError::OutOfGas { limit },
        HostError::OutOfBounds => CallError::OutOfBounds,
        HostError::ViewCannotWrite => CallError::ViewCannotWrite,
        HostError::ResultTooLarge { size } => CallError::ResultTooLarge {
            size,
            limit: host::OUTPUT_LIMIT,
        },
        HostError::ValueTooLarge { size } => CallError::ValueTooLarge {
            size,
            limit: host::VALUE_LIMIT,
        },
        HostError::RangeTooLarge => CallError::RangeTooLarge {
            limit: host::RANGE_BYTES_LIMIT,
        },
        HostError::Panic(message) => CallError::Panic(message),
        HostError::BadEvent(reason) => CallError::BadEvent(reason),
        HostError::Storage(e) => CallError::Storage(e),
        HostError::Internal(message) => CallError::Internal(message),
    }
}
