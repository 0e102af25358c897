//! Gas prices. One gas is roughly one WebAssembly operator, about a nanosecond of work;
//! host functions are priced in the same unit so that a call's gas tracks the time and
//! the lasting effects (stored bytes, published events) it costs the node.
//!
//! | What | Base | Per byte |
//! |---|---|---|
//! | every WebAssembly operator | 1 | – |
//! | `memory.fill` / `memory.copy` / `memory.init` | (1, as an operator) | 1 per 16 bytes |
//! | `table.fill` / `table.copy` / `table.init` / `table.grow` | (1, as an operator) | 1 per element |
//! | `input_len`, `time_ms` | 100 | – |
//! | `input_read`, `register_read`, `output`, `caller`, `context`, `tx_id` | 100 | 1 per byte copied |
//! | `storage_read` | 2,000 | 1 per byte of the value |
//! | `storage_write` | 5,000 | 10 per byte of key and value |
//! | `storage_remove` | 5,000 | 1 per byte of the removed value (it is read) |
//! | `storage_range` | 2,000 + 200 per entry read | 1 per byte read (36 + value per entry) + 1 per byte of the register |
//! | `emit` | 5,000 | 10 per byte of name and data |
//! | `log` | 500 | 1 per byte kept |
//! | `panic` | 100 | – |
//!
//! The base is charged before the host function does any work; per-byte charges as soon
//! as the size is known (before copying for guest-provided data, after the read for
//! data coming from storage, whose size is bounded by the value limit). `storage_range`
//! reads the state in pages of 32 entries and pays for each page as it is read, including
//! entries the call's own removals hide.
//!
//! Changing a price of the first three rows changes compiled code: the on-disk module
//! cache is keyed by these constants, so it is rebuilt automatically.

/// Gas of every WebAssembly operator (the `Metering` cost function).
pub const OPERATOR: u64 = 1;
/// `memory.fill`, `memory.copy` and `memory.init` cost 1 gas per this many bytes, on top
/// of the operator itself (a right shift, so a power of two).
pub const BULK_MEMORY_BYTES_PER_GAS_SHIFT: u32 = 4;
/// Table bulk operations cost this per element (0 or 1; a shift of 0 means 1 per element).
pub const BULK_TABLE_ELEMENT_SHIFT: u32 = 0;

/// Base of the cheapest host functions: the cost of leaving and re-entering the guest.
pub const HOST_BASE: u64 = 100;
/// Per byte copied between the guest's memory and the host.
pub const COPY_PER_BYTE: u64 = 1;
pub const STORAGE_READ_BASE: u64 = 2_000;
pub const STORAGE_READ_PER_BYTE: u64 = 1;
pub const STORAGE_WRITE_BASE: u64 = 5_000;
pub const STORAGE_WRITE_PER_BYTE: u64 = 10;
pub const STORAGE_REMOVE_BASE: u64 = 5_000;
pub const STORAGE_RANGE_BASE: u64 = 2_000;
pub const STORAGE_RANGE_PER_ENTRY: u64 = 200;
pub const STORAGE_RANGE_PER_BYTE: u64 = 1;
pub const EMIT_BASE: u64 = 5_000;
pub const EMIT_PER_BYTE: u64 = 10;
pub const LOG_BASE: u64 = 500;
pub const LOG_PER_BYTE: u64 = 1;
pub const PANIC_BASE: u64 = 100;

/// `base + per_byte * bytes`, saturating (an absurd size then simply runs out of gas).
pub fn price(base: u64, per_byte: u64, bytes: u64) -> u64 {
    base.saturating_add(per_byte.saturating_mul(bytes))
}
