//! A compile-time middleware, run after `wasmer_middlewares::Metering`, that closes two
//! holes a flat "1 gas per operator" leaves open:
//!
//! * **Bulk operators.** `memory.fill`/`memory.copy`/`memory.init` and the table bulk
//!   operators do work proportional to a length operand, so one operator could touch the
//!   whole memory. Before each of them the length is charged from Metering's own
//!   remaining-points global (see [`super::gas`]); running out sets Metering's
//!   "exhausted" flag, exactly as Metering does.
//! * **Call depth.** The native stack is bounded by wasmer (a guard page turns an overflow
//!   into a trap), but where that happens depends on the machine code's frame sizes, which
//!   differ between CPUs. A counter incremented before every call and decremented after it
//!   traps at [`MAX_CALL_DEPTH`] nested calls on every node alike; the native guard stays
//!   as a backstop for huge frames.

use std::sync::Mutex;

use wasmer::sys::wasmparser::{BlockType, Operator};
use wasmer::sys::{FunctionMiddleware, MiddlewareError, MiddlewareReaderState, ModuleMiddleware};
use wasmer::{ExportIndex, GlobalInit, GlobalType, LocalFunctionIndex, ModuleInfo, Mutability, Type};

use super::gas;

/// Export names of Metering's globals (see `wasmer_middlewares::metering`).
pub(crate) const REMAINING_POINTS_EXPORT: &str = "wasmer_metering_remaining_points";
pub(crate) const POINTS_EXHAUSTED_EXPORT: &str = "wasmer_metering_points_exhausted";
/// Export name of the call-depth counter added here (names starting with `_` are never
/// callable, and a guest export of that name is simply shadowed).
pub(crate) const CALL_DEPTH_EXPORT: &str = "__cmesh_call_depth";
/// Deepest allowed nesting of guest function calls.
pub(crate) const MAX_CALL_DEPTH: u32 = 10_000;

const NAME: &str = "cmesh-guards";

#[derive(Debug, Clone, Copy)]
struct Globals {
    remaining: u32,
    exhausted: u32,
    depth: u32,
    scratch: u32,
}

/// The module middleware. Like `Metering`, one instance serves exactly one module.
#[derive(Debug, Default)]
pub(crate) struct Guards {
    globals: Mutex<Option<Globals>>,
}

impl ModuleMiddleware for Guards {
    fn generate_function_middleware<'a>(&self, _: LocalFunctionIndex) -> Box<dyn FunctionMiddleware<'a> + 'a> {
        let globals = *self.globals.lock().unwrap_or_else(|e| e.into_inner());
        Box::new(FunctionGuards { globals })
    }

    fn transform_module_info(&self, info: &mut ModuleInfo) -> Result<(), MiddlewareError> {
        let mut slot = self.globals.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Err(MiddlewareError::new(NAME, "used for a second module"));
        }
        let metering_global = |name: &str| match info.exports.get(name) {
            Some(ExportIndex::Global(index)) => Ok(index.as_u32()),
            _ => Err(MiddlewareError::new(
                NAME,
                format!("`{name}` missing: Metering must run first"),
            )),
        };
        let remaining = metering_global(REMAINING_POINTS_EXPORT)?;
        let exhausted = metering_global(POINTS_EXHAUSTED_EXPORT)?;

        let depth = info.globals.push(GlobalType::new(Type::I32, Mutability::Var));
        info.global_initializers.push(GlobalInit::I32Const(0));
        info.exports
            .insert(CALL_DEPTH_EXPORT.to_string(), ExportIndex::Global(depth));
        let scratch = info.globals.push(GlobalType::new(Type::I32, Mutability::Var));
        info.global_initializers.push(GlobalInit::I32Const(0));

        *slot = Some(Globals {
            remaining,
            exhausted,
            depth: depth.as_u32(),
            scratch: scratch.as_u32(),
        });
        Ok(())
    }
}

#[derive(Debug)]
struct FunctionGuards {
    globals: Option<Globals>,
}

impl<'a> FunctionMiddleware<'a> for FunctionGuards {
    fn feed(&mut self, operator: Operator<'a>, state: &mut MiddlewareReaderState<'a>) -> Result<(), MiddlewareError> {
        let g = self
            .globals
            .ok_or_else(|| MiddlewareError::new(NAME, "module info was not transformed"))?;
        match operator {
            // The depth is counted around call sites rather than in the callee's prologue
            // and epilogue: a callee can leave by `return`, by its final `end` or by a
            // branch to its own label, but always comes back here (or traps, and then the
            // instance is discarded).
            Operator::Call { .. } | Operator::CallIndirect { .. } | Operator::CallRef { .. } => {
                state.extend(enter(&g));
                state.push_operator(operator);
                state.extend(leave(&g));
                return Ok(());
            }
            Operator::ReturnCall { .. } | Operator::ReturnCallIndirect { .. } | Operator::ReturnCallRef { .. } => {
                return Err(MiddlewareError::new(NAME, "tail calls are not supported"));
            }
            Operator::MemoryFill { .. } | Operator::MemoryCopy { .. } | Operator::MemoryInit { .. } => {
                state.extend(charge_top(&g, gas::BULK_MEMORY_BYTES_PER_GAS_SHIFT))
            }
            Operator::TableFill { .. }
            | Operator::TableCopy { .. }
            | Operator::TableInit { .. }
            | Operator::TableGrow { .. } => state.extend(charge_top(&g, gas::BULK_TABLE_ELEMENT_SHIFT)),
            _ => {}
        }
        state.push_operator(operator);
        Ok(())
    }
}

/// Before a call: `depth += 1; if depth > MAX { unreachable }`.
fn enter<'a>(g: &Globals) -> [Operator<'a>; 10] {
    [
        Operator::GlobalGet { global_index: g.depth },
        Operator::I32Const { value: 1 },
        Operator::I32Add,
        Operator::GlobalSet { global_index: g.depth },
        Operator::GlobalGet { global_index: g.depth },
        Operator::I32Const {
            value: MAX_CALL_DEPTH as i32,
        },
        Operator::I32GtU,
        Operator::If {
            blockty: BlockType::Empty,
        },
        Operator::Unreachable,
        Operator::End,
    ]
}

/// After a call returned: `depth -= 1`.
fn leave<'a>(g: &Globals) -> [Operator<'a>; 4] {
    [
        Operator::GlobalGet { global_index: g.depth },
        Operator::I32Const { value: 1 },
        Operator::I32Sub,
        Operator::GlobalSet { global_index: g.depth },
    ]
}

/// Charges `len >> shift` gas for the `i32` length on top of the operand stack, leaving
/// the stack as it was: the length is parked in a scratch global meanwhile.
fn charge_top<'a>(g: &Globals, shift: u32) -> Vec<Operator<'a>> {
    let cost = |ops: &mut Vec<Operator<'a>>| {
        ops.push(Operator::GlobalGet {
            global_index: g.scratch,
        });
        ops.push(Operator::I64ExtendI32U);
        if shift > 0 {
            ops.push(Operator::I64Const {
                value: i64::from(shift),
            });
            ops.push(Operator::I64ShrU);
        }
    };
    let mut ops = Vec::with_capacity(24);
    ops.push(Operator::GlobalSet {
        global_index: g.scratch,
    });
    ops.push(Operator::GlobalGet {
        global_index: g.remaining,
    });
    cost(&mut ops);
    ops.extend([
        Operator::I64LtU,
        Operator::If {
            blockty: BlockType::Empty,
        },
        Operator::I32Const { value: 1 },
        Operator::GlobalSet {
            global_index: g.exhausted,
        },
        Operator::Unreachable,
        Operator::End,
        Operator::GlobalGet {
            global_index: g.remaining,
        },
    ]);
    cost(&mut ops);
    ops.extend([
        Operator::I64Sub,
        Operator::GlobalSet {
            global_index: g.remaining,
        },
        Operator::GlobalGet {
            global_index: g.scratch,
        },
    ]);
    ops
}
