//! The raw host functions of docs/ABI.md (module `cmesh`) and thin safe wrappers.
//!
//! App code never needs this module: [`crate::env`], [`crate::storage`] and
//! [`crate::method!`] use it. Outside wasm32 the imports do not exist; each is replaced by
//! a stub that panics, so that the pure parts of the crate build and test natively.

use crate::Key;

/// Declares the imports with their exact ABI types (`i32`/`i64`), or the native stubs.
macro_rules! host_functions {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)?; )*) => {
        #[cfg(target_arch = "wasm32")]
        mod sys {
            #[link(wasm_import_module = "cmesh")]
            extern "C" {
                $( pub fn $name($($arg: $ty),*) $(-> $ret)?; )*
            }
        }

        #[cfg(not(target_arch = "wasm32"))]
        #[allow(unused_variables, clippy::missing_safety_doc)]
        mod sys {
            $( pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                panic!(concat!("the cmesh host function `", stringify!($name),
                    "` only exists inside the node (build for wasm32-unknown-unknown)"))
            } )*
        }
    };
}

host_functions! {
    fn input_len() -> i32;
    fn input_read(ptr: i32);
    fn output(ptr: i32, len: i32);
    fn storage_read(key_ptr: i32) -> i64;
    fn storage_write(key_ptr: i32, value_ptr: i32, value_len: i32);
    fn storage_remove(key_ptr: i32) -> i32;
    fn storage_range(start_ptr: i32, end_ptr: i32, limit: i32) -> i64;
    fn register_read(ptr: i32);
    fn emit(name_ptr: i32, name_len: i32, data_ptr: i32, data_len: i32);
    fn caller(ptr: i32);
    fn context(ptr: i32);
    fn tx_id(ptr: i32);
    fn time_ms() -> i64;
    fn log(ptr: i32, len: i32);
    fn panic(ptr: i32, len: i32);
}

// Guest pointers and lengths are 32-bit; on wasm32 these casts are exact.
fn ptr(p: *const u8) -> i32 {
    p as usize as i32
}
fn len(n: usize) -> i32 {
    n as i32
}

/// Copies the register (filled by the last read or range) into a new buffer of `n` bytes.
fn register(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    if n > 0 {
        unsafe { sys::register_read(ptr(buf.as_mut_ptr())) };
    }
    buf
}

pub fn input() -> Vec<u8> {
    let n = unsafe { sys::input_len() } as u32 as usize;
    let mut buf = vec![0u8; n];
    if n > 0 {
        unsafe { sys::input_read(ptr(buf.as_mut_ptr())) };
    }
    buf
}

pub fn output(data: &[u8]) {
    unsafe { sys::output(ptr(data.as_ptr()), len(data.len())) }
}

pub fn storage_read(key: &Key) -> Option<Vec<u8>> {
    let n = unsafe { sys::storage_read(ptr(key.as_bytes().as_ptr())) };
    (n >= 0).then(|| register(n as usize))
}

pub fn storage_write(key: &Key, value: &[u8]) {
    unsafe { sys::storage_write(ptr(key.as_bytes().as_ptr()), ptr(value.as_ptr()), len(value.len())) }
}

pub fn storage_remove(key: &Key) -> bool {
    unsafe { sys::storage_remove(ptr(key.as_bytes().as_ptr())) == 1 }
}

/// The raw register of `storage_range` (see [`crate::storage::parse_entries`]).
pub fn storage_range(start: &Key, end: Option<&Key>, limit: u32) -> Vec<u8> {
    let end = end.map_or(-1, |k| ptr(k.as_bytes().as_ptr()));
    let limit = limit.min(i32::MAX as u32) as i32;
    let n = unsafe { sys::storage_range(ptr(start.as_bytes().as_ptr()), end, limit) };
    register(n.max(0) as usize)
}

pub fn emit(name: &str, data: &[u8]) {
    unsafe { sys::emit(ptr(name.as_ptr()), len(name.len()), ptr(data.as_ptr()), len(data.len())) }
}

pub fn caller() -> [u8; 20] {
    let mut out = [0u8; 20];
    unsafe { sys::caller(ptr(out.as_mut_ptr())) };
    out
}

pub fn context() -> [u8; 32] {
    let mut out = [0u8; 32];
    unsafe { sys::context(ptr(out.as_mut_ptr())) };
    out
}

pub fn tx_id() -> [u8; 32] {
    let mut out = [0u8; 32];
    unsafe { sys::tx_id(ptr(out.as_mut_ptr())) };
    out
}

pub fn time_ms() -> i64 {
    unsafe { sys::time_ms() }
}

pub fn log(line: &str) {
    unsafe { sys::log(ptr(line.as_ptr()), len(line.len())) }
}

/// Aborts the call with `message` (the caller sees `app panicked: <message>`).
pub fn abort(message: &str) -> ! {
    unsafe { sys::panic(ptr(message.as_ptr()), len(message.len())) };
    // The host never returns from `panic`; trap in case it did.
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    unreachable!()
}
