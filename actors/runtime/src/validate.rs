//! Deploy-time checks of a module, before anything is compiled, so that a bad module is
//! refused cheaply and with a precise reason (docs/ABI.md, "Exports" and "Imports").
//!
//! Besides the ABI rules, a few counts are bounded because every call instantiates the
//! module afresh and instantiation work is not metered: functions, exports, globals and
//! tables.

use wasmer::sys::wasmparser::{
    CompositeInnerType, ExternalKind, FuncType, Parser, Payload, TypeRef, ValType, Validator,
};

use super::engine::wasmparser_features;
use super::host::{signature_text, HostFn, Val, IMPORT_MODULE};
use super::instrument::{POINTS_EXHAUSTED_EXPORT, REMAINING_POINTS_EXPORT};
use super::DeployError;

/// Most elements a table may have (declared, or after `table.grow`).
pub(crate) const MAX_TABLE_ELEMENTS: u32 = 100_000;
/// Most tables a module may define.
pub(crate) const MAX_TABLES: u32 = 8;
/// Most globals a module may define.
pub(crate) const MAX_GLOBALS: u32 = 1_024;
/// Most functions (imported and defined) a module may have.
pub(crate) const MAX_FUNCTIONS: u32 = 50_000;
/// Most exports a module may have.
pub(crate) const MAX_EXPORTS: u32 = 1_000;

/// Limits the checks depend on.
pub(crate) struct Limits {
    pub max_module_bytes: usize,
    pub max_pages: u32,
}

/// Checks `wasm` against the ABI and the limits.
pub(crate) fn validate(wasm: &[u8], limits: &Limits) -> Result<(), DeployError> {
    if wasm.len() > limits.max_module_bytes {
        return Err(DeployError::TooLarge {
            size: wasm.len(),
            limit: limits.max_module_bytes,
        });
    }
    if !wasm.starts_with(b"\0asm") {
        return Err(DeployError::NotWasm);
    }
    Validator::new_with_features(wasmparser_features())
        .validate_all(wasm)
        .map_err(|e| DeployError::Invalid(e.to_string()))?;

    // The module is valid from here on, so indices are in range; still, no indexing that
    // could panic.
    let invalid = |e: wasmer::sys::wasmparser::BinaryReaderError| DeployError::Invalid(e.to_string());
    let mut types: Vec<Option<FuncType>> = Vec::new();
    let mut functions: Vec<u32> = Vec::new(); // type index of every function
    let mut has_memory = false;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.map_err(invalid)?.into_types() {
                        types.push(match sub.composite_type.inner {
                            CompositeInnerType::Func(ty) => Some(ty),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    let unknown = || DeployError::UnknownImport {
                        module: import.module.to_string(),
                        name: import.name.to_string(),
                    };
                    let host = (import.module == IMPORT_MODULE)
                        .then(|| HostFn::by_name(import.name))
                        .flatten()
                        .ok_or_else(unknown)?;
                    let (TypeRef::Func(index) | TypeRef::FuncExact(index)) = import.ty else {
                        return Err(unknown());
                    };
                    let ty = func_type(&types, index)?;
                    if !matches_host(ty, host) {
                        return Err(DeployError::ImportType {
                            name: import.name.to_string(),
                            expected: host.signature_text(),
                            found: type_text(ty),
                        });
                    }
                    functions.push(index);
                }
            }
            Payload::FunctionSection(reader) => {
                for index in reader {
                    functions.push(index.map_err(invalid)?);
                }
                if functions.len() > MAX_FUNCTIONS as usize {
                    return Err(DeployError::Invalid(format!(
                        "{} functions, over the limit of {MAX_FUNCTIONS}",
                        functions.len()
                    )));
                }
            }
            Payload::TableSection(reader) => {
                if reader.count() > MAX_TABLES {
                    return Err(DeployError::Invalid(format!(
                        "{} tables, over the limit of {MAX_TABLES}",
                        reader.count()
                    )));
                }
                for table in reader {
                    let table = table.map_err(invalid)?;
                    if table.ty.initial > u64::from(MAX_TABLE_ELEMENTS) {
                        return Err(DeployError::Invalid(format!(
                            "a table of {} elements, over the limit of {MAX_TABLE_ELEMENTS}",
                            table.ty.initial
                        )));
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(invalid)?;
                    if memory.initial > u64::from(limits.max_pages) {
                        return Err(DeployError::MemoryTooLarge {
                            declared_pages: memory.initial,
                            limit_pages: u64::from(limits.max_pages),
                        });
                    }
                }
            }
            Payload::GlobalSection(reader) if reader.count() > MAX_GLOBALS => {
                return Err(DeployError::Invalid(format!(
                    "{} globals, over the limit of {MAX_GLOBALS}",
                    reader.count()
                )));
            }
            Payload::ExportSection(reader) => {
                if reader.count() > MAX_EXPORTS {
                    return Err(DeployError::Invalid(format!(
                        "{} exports, over the limit of {MAX_EXPORTS}",
                        reader.count()
                    )));
                }
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if export.name == REMAINING_POINTS_EXPORT || export.name == POINTS_EXHAUSTED_EXPORT {
                        return Err(DeployError::Invalid(format!(
                            "export name `{}` is reserved by the runtime",
                            export.name
                        )));
                    }
                    match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => {
                            let index = functions.get(export.index as usize).ok_or_else(|| {
                                DeployError::Invalid(format!("export `{}` names a missing function", export.name))
                            })?;
                            let ty = func_type(&types, *index)?;
                            if !ty.params().is_empty() || !ty.results().is_empty() {
                                return Err(DeployError::BadExport {
                                    name: export.name.to_string(),
                                    ty: type_text(ty),
                                });
                            }
                        }
                        ExternalKind::Memory if export.name == "memory" => has_memory = true,
                        _ => {}
                    }
                }
            }
            Payload::StartSection { .. } => return Err(DeployError::StartFunction),
            _ => {}
        }
    }
    if !has_memory {
        return Err(DeployError::NoMemory);
    }
    Ok(())
}

fn func_type(types: &[Option<FuncType>], index: u32) -> Result<&FuncType, DeployError> {
    types
        .get(index as usize)
        .and_then(Option::as_ref)
        .ok_or_else(|| DeployError::Invalid(format!("type {index} is not a function type")))
}

fn matches_host(ty: &FuncType, host: HostFn) -> bool {
    let (params, results) = host.signature();
    same(ty.params(), params) && same(ty.results(), results)
}

fn same(types: &[ValType], vals: &[Val]) -> bool {
    types.len() == vals.len()
        && types
            .iter()
            .zip(vals)
            .all(|(t, v)| matches!((t, v), (ValType::I32, Val::I32) | (ValType::I64, Val::I64)))
}

fn type_text(ty: &FuncType) -> String {
    let params: Vec<String> = ty.params().iter().map(|t| t.to_string()).collect();
    let results: Vec<String> = ty.results().iter().map(|t| t.to_string()).collect();
    signature_text(params.iter().map(String::as_str), results.iter().map(String::as_str))
}
