//! The wasmer engine every app runs on: Cranelift with NaN canonicalization, a fixed set of
//! wasm features, gas metering, the [`Guards`](super::instrument::Guards) middleware, and
//! tunables that cap memory, tables and the guest stack.
//!
//! `wasmer_middlewares::Metering` can instrument only one module (it panics on a second),
//! so each module gets its own engine; instances of that module are created in stores of
//! the same engine. Building an engine is cheap next to compiling.

use std::ptr::NonNull;
use std::sync::Arc;

use wasmer::sys::vm::{
    MemoryError, MemoryStyle, TableStyle, VMConfig, VMMemory, VMMemoryDefinition, VMTable, VMTableDefinition,
};
use wasmer::sys::wasmparser::{Operator, WasmFeatures};
use wasmer::sys::{
    BaseTunables, CompilerConfig, Cranelift, CraneliftOptLevel, EngineBuilder, Features, NativeEngineExt, Target,
    Tunables,
};
use wasmer::{Engine, MemoryType, Pages, TableType};
use wasmer_middlewares::Metering;

use super::instrument::{Guards, MAX_CALL_DEPTH};
#[cfg(unix)]
use super::memory::{MemoryPool, PooledMemory};
use super::{gas, validate};

/// Size of the native stack guest code runs on (wasmer runs guests on a stack of its own,
/// whose guard page turns an overflow into a trap). Large enough that the call-depth
/// limit is normally what stops a recursion.
pub(crate) const WASM_STACK_BYTES: usize = 8 << 20;

/// Bump when anything that changes compiled code, and is not already in
/// [`EngineSettings::fingerprint`], changes.
const CODEGEN_VERSION: u32 = 2;

/// The style of pooled memories: every access is checked against the memory's current
/// length, so no guard pages are needed (see [`super::memory`]).
pub(crate) const POOLED_MEMORY_STYLE: MemoryStyle = MemoryStyle::Dynamic { offset_guard_size: 0 };

/// What engines are built from; shared by all modules of a runtime.
#[derive(Clone)]
pub(crate) struct EngineSettings {
    target: Target,
    max_pages: Pages,
    #[cfg(unix)]
    pool: Arc<MemoryPool>,
}

impl EngineSettings {
    pub(crate) fn new(max_pages: u32) -> Self {
        EngineSettings {
            target: Target::default(),
            max_pages: Pages(max_pages),
            #[cfg(unix)]
            pool: Arc::new(MemoryPool::new(Pages(max_pages))),
        }
    }

    /// An engine for one module.
    pub(crate) fn engine(&self) -> Engine {
        let mut compiler = Cranelift::new();
        compiler.canonicalize_nans(true).opt_level(CraneliftOptLevel::Speed);
        compiler.push_middleware(Arc::new(Metering::new(0, cost)));
        compiler.push_middleware(Arc::new(Guards::default()));
        let mut engine: Engine = EngineBuilder::new(compiler)
            .set_target(Some(self.target.clone()))
            .set_features(Some(features()))
            .engine()
            .into();
        engine.set_tunables(LimitingTunables {
            base: BaseTunables::new(),
            #[cfg(unix)]
            pool: self.pool.clone(),
            max_pages: self.max_pages,
            vmconfig: VMConfig {
                wasm_stack_size: Some(WASM_STACK_BYTES),
            },
        });
        engine
    }

    /// Identifies everything compiled code depends on, so that a disk cache written under
    /// other settings (another wasmer, CPU, gas schedule, limit) is never loaded.
    pub(crate) fn fingerprint(&self) -> String {
        format!(
            "codegen={CODEGEN_VERSION};wasmer=7.4.2;target={};cpu={:?};features={:?};\
             op={};bulk_mem_shift={};bulk_table_shift={};depth={MAX_CALL_DEPTH};\
             stack={WASM_STACK_BYTES};pages={};tables={}",
            self.target.triple(),
            self.target.cpu_features(),
            features(),
            gas::OPERATOR,
            gas::BULK_MEMORY_BYTES_PER_GAS_SHIFT,
            gas::BULK_TABLE_ELEMENT_SHIFT,
            self.max_pages.0,
            validate::MAX_TABLE_ELEMENTS,
        )
    }
}

fn cost(_: &Operator) -> u64 {
    gas::OPERATOR
}

/// Wasm features for wasmer: what Rust's `wasm32-unknown-unknown` emits, nothing that
/// could make execution differ between nodes (threads, SIMD) or that we do not meter.
/// Mutable globals, saturating float-to-int and sign extension are always on in wasmer.
pub(crate) fn features() -> Features {
    let mut features = Features::none();
    features.bulk_memory(true).reference_types(true).multi_value(true);
    features
}

/// The same set for wasmparser, which validates before anything is compiled.
pub(crate) fn wasmparser_features() -> WasmFeatures {
    WasmFeatures::FLOATS
        | WasmFeatures::GC_TYPES
        | WasmFeatures::MUTABLE_GLOBAL
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::REFERENCE_TYPES
}

/// `BaseTunables` with memory capped at the node's limit (so `memory.grow` past it returns
/// -1) and taken from a pool (see [`super::memory`]), tables capped at
/// [`validate::MAX_TABLE_ELEMENTS`] and a fixed guest stack size.
struct LimitingTunables {
    base: BaseTunables,
    #[cfg(unix)]
    pool: Arc<MemoryPool>,
    max_pages: Pages,
    vmconfig: VMConfig,
}

impl LimitingTunables {
    fn memory_type(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        if ty.minimum > self.max_pages {
            return Err(MemoryError::MinimumMemoryTooLarge {
                min_requested: ty.minimum,
                max_allowed: self.max_pages,
            });
        }
        let mut capped = *ty;
        capped.maximum = Some(match ty.maximum {
            Some(max) if max < self.max_pages => max,
            _ => self.max_pages,
        });
        Ok(capped)
    }

    fn table_type(&self, ty: &TableType) -> Result<TableType, String> {
        let limit = validate::MAX_TABLE_ELEMENTS;
        if ty.minimum > limit {
            return Err(format!("table of {} elements, over the limit of {limit}", ty.minimum));
        }
        let mut capped = *ty;
        capped.maximum = Some(ty.maximum.map_or(limit, |max| max.min(limit)));
        Ok(capped)
    }
}

impl Tunables for LimitingTunables {
    /// Bounds-checked memories (see [`super::memory`]) on Unix, where they come from the
    /// pool; wasmer's default elsewhere.
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        if cfg!(unix) {
            POOLED_MEMORY_STYLE
        } else {
            self.base.memory_style(memory)
        }
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(&self, ty: &MemoryType, style: &MemoryStyle) -> Result<VMMemory, MemoryError> {
        self.base.create_host_memory(&self.memory_type(ty)?, style)
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let ty = self.memory_type(ty)?;
        #[cfg(unix)]
        if *style == POOLED_MEMORY_STYLE {
            // SAFETY: the caller guarantees `vm_definition_location` is valid for the
            // memory's lifetime.
            let memory = unsafe { PooledMemory::new(&self.pool, ty, vm_definition_location)? };
            return Ok(VMMemory(Box::new(memory)));
        }
        // SAFETY: forwarded unchanged; the caller guarantees `vm_definition_location`.
        unsafe { self.base.create_vm_memory(&ty, style, vm_definition_location) }
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(&self.table_type(ty)?, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        let ty = self.table_type(ty)?;
        // SAFETY: forwarded unchanged; the caller guarantees `vm_definition_location`.
        unsafe { self.base.create_vm_table(&ty, style, vm_definition_location) }
    }

    fn vmconfig(&self) -> &VMConfig {
        &self.vmconfig
    }
}
