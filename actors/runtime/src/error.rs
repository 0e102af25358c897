//! The runtime's errors. Each says what went wrong in words a caller can act on, and maps
//! to a CMTP status: what the app (or its deployer) got wrong is 4xx, what the node got
//! wrong is 5xx.

use cmesh_common::Status;

use super::StorageError;

/// Why a module was refused at deploy time (or, for a stored module, when it was loaded
/// again). Nothing is stored for a refused module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    #[error("module is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("not a WebAssembly module (it does not start with `\\0asm`)")]
    NotWasm,
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
    #[error("import `{module}.{name}` is not offered by the host (see docs/ABI.md for the `cmesh` imports)")]
    UnknownImport { module: String, name: String },
    #[error("import `cmesh.{name}` has type {found}, expected {expected}")]
    ImportType {
        name: String,
        expected: String,
        found: String,
    },
    #[error("exported function `{name}` has type {ty}; every exported function must be () -> ()")]
    BadExport { name: String, ty: String },
    #[error("the module does not export its linear memory as `memory`")]
    NoMemory,
    /// Sizes in 64 KiB WebAssembly pages.
    #[error(
        "the module declares {declared_pages} pages ({} KiB) of initial memory, over the limit of {limit_pages} pages ({} KiB)",
        .declared_pages * 64,
        .limit_pages * 64
    )]
    MemoryTooLarge { declared_pages: u64, limit_pages: u64 },
    #[error("the module has a start function; apps must not run code at instantiation")]
    StartFunction,
    #[error("compilation failed: {0}")]
    Compile(String),
}

impl DeployError {
    pub fn status(&self) -> Status {
        match self {
            DeployError::TooLarge { .. } => Status::PAYLOAD_TOO_LARGE,
            _ => Status::UNPROCESSABLE,
        }
    }
}

/// Why a call failed. A failed call has no effects: its writes, events and output are
/// dropped.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("method `{method}` not found; available methods: {}", list(.available))]
    MethodNotFound { method: String, available: Vec<String> },
    #[error("out of gas (limit {limit})")]
    OutOfGas { limit: u64 },
    #[error("app trapped: {0}")]
    Trap(String),
    #[error("app panicked: {0}")]
    Panic(String),
    #[error("guest pointer out of bounds")]
    OutOfBounds,
    #[error("result too large: {size} bytes, over the limit of {limit} bytes")]
    ResultTooLarge { size: u64, limit: u64 },
    #[error("storage value too large: {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge { size: u64, limit: u64 },
    #[error("storage range result too large: over {limit} bytes; use a smaller limit")]
    RangeTooLarge { limit: u64 },
    #[error("views cannot write")]
    ViewCannotWrite,
    #[error("memory limit of {limit_mib} MiB reached")]
    MemoryLimit { limit_mib: u64 },
    #[error("call stack exhausted")]
    StackExhausted,
    #[error("bad event: {0}")]
    BadEvent(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The app's stored module no longer validates or compiles (for example after the
    /// node's limits were lowered).
    #[error("stored module does not load: {0}")]
    Deploy(DeployError),
    /// A failure of the node, not of the app.
    #[error("runtime error: {0}")]
    Internal(String),
}

fn list(methods: &[String]) -> String {
    if methods.is_empty() {
        "(none)".to_string()
    } else {
        methods.join(", ")
    }
}

impl CallError {
    pub fn status(&self) -> Status {
        match self {
            CallError::MethodNotFound { .. } => Status::NOT_FOUND,
            CallError::ResultTooLarge { .. } | CallError::ValueTooLarge { .. } | CallError::RangeTooLarge { .. } => {
                Status::PAYLOAD_TOO_LARGE
            }
            CallError::OutOfGas { .. }
            | CallError::Trap(_)
            | CallError::Panic(_)
            | CallError::OutOfBounds
            | CallError::ViewCannotWrite
            | CallError::MemoryLimit { .. }
            | CallError::StackExhausted
            | CallError::BadEvent(_) => Status::UNPROCESSABLE,
            CallError::Storage(_) | CallError::Deploy(_) | CallError::Internal(_) => Status::INTERNAL,
        }
    }
}

/// The runtime could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid runtime config: {0}")]
    Config(String),
    #[error("cannot create the module cache directory {path}: {source}")]
    CacheDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub fn status(&self) -> Status {
        Status::INTERNAL
    }
}
