//! The host functions of `docs/ABI.md` (import module `cmesh`).
//!
//! Every guest pointer/length pair is checked against the memory's current size before
//! use, and every failure is a [`HostError`] returned to wasmer, which turns it into a
//! trap; nothing here panics on guest input. Gas is charged from Metering's
//! remaining-points global, so host work and guest operators share one budget.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use wasmer::{AsStoreMut, Function, FunctionEnv, FunctionEnvMut, Global, Memory, MemoryView, Store, Value};

use super::gas::{self, price};
use super::{AppEvent, Entry, StateReader, StorageError};

/// Largest `output`.
pub(crate) const OUTPUT_LIMIT: u64 = 1 << 20;
/// Largest stored value.
pub(crate) const VALUE_LIMIT: u64 = 1 << 20;
/// Largest event data (JSON text).
pub(crate) const EVENT_DATA_LIMIT: u64 = 64 << 10;
/// Longest event name.
pub(crate) const EVENT_NAME_LIMIT: u64 = 64;
/// A log line is cut at this many bytes.
pub(crate) const LOG_LINE_LIMIT: u64 = 1 << 10;
/// Lines kept per call; later ones are dropped.
pub(crate) const LOG_LINES_LIMIT: usize = 32;
/// A panic message is cut at this many bytes.
pub(crate) const PANIC_MESSAGE_LIMIT: u64 = 4 << 10;
/// Most entries one `storage_range` returns.
pub(crate) const RANGE_LIMIT: usize = 1000;
/// Largest `storage_range` register: bounds what one call makes the node load.
pub(crate) const RANGE_BYTES_LIMIT: u64 = 8 << 20;
/// Entries fetched from the state per `StateReader::range` call while merging.
const RANGE_PAGE: usize = 32;

/// The host functions, in no particular order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostFn {
    InputLen,
    InputRead,
    Output,
    StorageRead,
    StorageWrite,
    StorageRemove,
    StorageRange,
    RegisterRead,
    Emit,
    Caller,
    Context,
    TxId,
    TimeMs,
    Log,
    Panic,
}

/// A value type of a host function signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Val {
    I32,
    I64,
}

use Val::{I32, I64};

pub(crate) const IMPORT_MODULE: &str = "cmesh";

impl HostFn {
    pub(crate) const ALL: [HostFn; 15] = [
        HostFn::InputLen,
        HostFn::InputRead,
        HostFn::Output,
        HostFn::StorageRead,
        HostFn::StorageWrite,
        HostFn::StorageRemove,
        HostFn::StorageRange,
        HostFn::RegisterRead,
        HostFn::Emit,
        HostFn::Caller,
        HostFn::Context,
        HostFn::TxId,
        HostFn::TimeMs,
        HostFn::Log,
        HostFn::Panic,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            HostFn::InputLen => "input_len",
            HostFn::InputRead => "input_read",
            HostFn::Output => "output",
            HostFn::StorageRead => "storage_read",
            HostFn::StorageWrite => "storage_write",
            HostFn::StorageRemove => "storage_remove",
            HostFn::StorageRange => "storage_range",
            HostFn::RegisterRead => "register_read",
            HostFn::Emit => "emit",
            HostFn::Caller => "caller",
            HostFn::Context => "context",
            HostFn::TxId => "tx_id",
            HostFn::TimeMs => "time_ms",
            HostFn::Log => "log",
            HostFn::Panic => "panic",
        }
    }

    pub(crate) fn by_name(name: &str) -> Option<HostFn> {
        HostFn::ALL.into_iter().find(|f| f.name() == name)
    }

    /// (params, results)
    pub(crate) fn signature(self) -> (&'static [Val], &'static [Val]) {
        match self {
            HostFn::InputLen => (&[], &[I32]),
            HostFn::InputRead | HostFn::RegisterRead | HostFn::Caller | HostFn::Context | HostFn::TxId => (&[I32], &[]),
            HostFn::Output | HostFn::Log | HostFn::Panic => (&[I32, I32], &[]),
            HostFn::StorageRead => (&[I32], &[I64]),
            HostFn::StorageWrite => (&[I32, I32, I32], &[]),
            HostFn::StorageRemove => (&[I32], &[I32]),
            HostFn::StorageRange => (&[I32, I32, I32], &[I64]),
            HostFn::Emit => (&[I32, I32, I32, I32], &[]),
            HostFn::TimeMs => (&[], &[I64]),
        }
    }

    pub(crate) fn signature_text(self) -> String {
        let (params, results) = self.signature();
        signature_text(params.iter().map(|v| v.name()), results.iter().map(|v| v.name()))
    }

    pub(crate) fn function(self, store: &mut Store, env: &FunctionEnv<HostEnv>) -> Function {
        match self {
            HostFn::InputLen => Function::new_typed_with_env(store, env, input_len),
            HostFn::InputRead => Function::new_typed_with_env(store, env, input_read),
            HostFn::Output => Function::new_typed_with_env(store, env, output),
            HostFn::StorageRead => Function::new_typed_with_env(store, env, storage_read),
            HostFn::StorageWrite => Function::new_typed_with_env(store, env, storage_write),
            HostFn::StorageRemove => Function::new_typed_with_env(store, env, storage_remove),
            HostFn::StorageRange => Function::new_typed_with_env(store, env, storage_range),
            HostFn::RegisterRead => Function::new_typed_with_env(store, env, register_read),
            HostFn::Emit => Function::new_typed_with_env(store, env, emit),
            HostFn::Caller => Function::new_typed_with_env(store, env, caller),
            HostFn::Context => Function::new_typed_with_env(store, env, context),
            HostFn::TxId => Function::new_typed_with_env(store, env, tx_id),
            HostFn::TimeMs => Function::new_typed_with_env(store, env, time_ms),
            HostFn::Log => Function::new_typed_with_env(store, env, log),
            HostFn::Panic => Function::new_typed_with_env(store, env, panic),
        }
    }
}

impl Val {
    pub(crate) fn name(self) -> &'static str {
        match self {
            I32 => "i32",
            I64 => "i64",
        }
    }
}

/// `(i32, i32) -> i64`, the way errors show function types.
pub(crate) fn signature_text<'a>(
    params: impl Iterator<Item = &'a str>,
    results: impl Iterator<Item = &'a str>,
) -> String {
    let params: Vec<&str> = params.collect();
    let results: Vec<&str> = results.collect();
    let results = match results.len() {
        0 => "()".to_string(),
        1 => results[0].to_string(),
        _ => format!("({})", results.join(", ")),
    };
    format!("({}) -> {results}", params.join(", "))
}

/// Why a host function stopped the guest.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostError {
    #[error("out of gas")]
    OutOfGas,
    #[error("guest pointer out of bounds")]
    OutOfBounds,
    #[error("views cannot write")]
    ViewCannotWrite,
    #[error("result too large")]
    ResultTooLarge { size: u64 },
    #[error("value too large")]
    ValueTooLarge { size: u64 },
    #[error("range too large")]
    RangeTooLarge,
    #[error("app panicked: {0}")]
    Panic(String),
    #[error("bad event: {0}")]
    BadEvent(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Internal(String),
}

type HostResult<T> = Result<T, HostError>;

/// The state reader of the running call, with its lifetime erased so that it can live in
/// the `'static` function environment wasmer requires.
struct StatePtr(*const (dyn StateReader + 'static));

// SAFETY: the pointer is only dereferenced by host functions, which wasmer runs
// synchronously on the thread that called `Runtime::call`, while that call (and so the
// borrow the pointer came from) is in progress; see `HostEnv::new`.
unsafe impl Send for StatePtr {}

/// Per-call host state: the call's inputs, the overlay of its writes, its output, events
/// and logs.
pub(crate) struct HostEnv {
    pub(crate) memory: Option<Memory>,
    pub(crate) remaining: Option<Global>,
    pub(crate) exhausted: Option<Global>,
    state: StatePtr,
    app: [u8; 32],
    input: Vec<u8>,
    caller: [u8; 20],
    context: [u8; 32],
    tx_id: Option<[u8; 32]>,
    time_ms: u64,
    register: Vec<u8>,
    pub(crate) output: Vec<u8>,
    pub(crate) writes: BTreeMap<[u8; 32], Option<Vec<u8>>>,
    pub(crate) events: Vec<AppEvent>,
    pub(crate) logs: Vec<String>,
}

impl HostEnv {
    /// # Safety
    ///
    /// The returned value (and the store owning it) must be dropped before `state`'s
    /// borrow ends, and host functions must only run on the current thread. `Runtime::call`
    /// creates the store, runs the guest and drops the store before it returns.
    pub(crate) unsafe fn new(app: [u8; 32], call: &super::Call<'_>, state: &dyn StateReader) -> Self {
        let state: *const (dyn StateReader + '_) = state;
        // SAFETY: only the lifetime is changed (same fat-pointer layout); validity for the
        // duration of use is the caller's obligation above.
        let state: *const (dyn StateReader + 'static) = unsafe { std::mem::transmute(state) };
        HostEnv {
            memory: None,
            remaining: None,
            exhausted: None,
            state: StatePtr(state),
            app,
            input: call.input.to_vec(),
            caller: call.caller,
            context: call.context,
            tx_id: call.tx_id,
            time_ms: call.time_ms,
            register: Vec::new(),
            output: Vec::new(),
            writes: BTreeMap::new(),
            events: Vec::new(),
            logs: Vec::new(),
        }
    }

    fn state(&self) -> &dyn StateReader {
        // SAFETY: see `StatePtr` and `HostEnv::new`: the reader outlives this env.
        unsafe { &*self.state.0 }
    }

    fn is_view(&self) -> bool {
        self.tx_id.is_none()
    }

    fn memory(&self) -> HostResult<&Memory> {
        self.memory
            .as_ref()
            .ok_or_else(|| HostError::Internal("guest memory not attached".into()))
    }

    fn charge(&self, store: &mut impl AsStoreMut, cost: u64) -> HostResult<()> {
        let (Some(remaining), Some(exhausted)) = (&self.remaining, &self.exhausted) else {
            return Err(HostError::Internal("gas globals not attached".into()));
        };
        let left = remaining
            .get(store)
            .i64()
            .ok_or_else(|| HostError::Internal("gas global has the wrong type".into()))? as u64;
        let result = match left.checked_sub(cost) {
            Some(left) => remaining.set(store, Value::I64(left as i64)),
            None => {
                exhausted
                    .set(store, Value::I32(1))
                    .map_err(|e| HostError::Internal(e.message()))?;
                return Err(HostError::OutOfGas);
            }
        };
        result.map_err(|e| HostError::Internal(e.message()))
    }

    /// Storage read through the overlay of this call's writes.
    fn get(&self, key: &[u8; 32]) -> HostResult<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => Ok(self.state().get(key)?),
        }
    }
}

/// `ptr..ptr+len` as unsigned offsets, or `OutOfBounds` if not wholly inside memory.
fn span(view: &MemoryView<'_>, ptr: i32, len: u64) -> HostResult<(u64, u64)> {
    let start = u64::from(ptr as u32);
    let end = start + len;
    if end > view.data_size() {
        return Err(HostError::OutOfBounds);
    }
    Ok((start, end))
}

/// The guest's bytes at `ptr..ptr+len`. Read straight into a buffer of that size: wasmer's
/// `copy_range_to_vec` zeroes a 40 KiB bounce buffer on every call, which cost more than the
/// rest of a small read.
fn read_vec(view: &MemoryView<'_>, ptr: i32, len: u64) -> HostResult<Vec<u8>> {
    let (start, end) = span(view, ptr, len)?;
    let len = usize::try_from(end - start).map_err(|_| HostError::OutOfBounds)?;
    let mut bytes = vec![0u8; len];
    view.read(start, &mut bytes).map_err(|_| HostError::OutOfBounds)?;
    Ok(bytes)
}

fn read_key(view: &MemoryView<'_>, ptr: i32) -> HostResult<[u8; 32]> {
    let (start, _) = span(view, ptr, 32)?;
    let mut key = [0u8; 32];
    view.read(start, &mut key).map_err(|_| HostError::OutOfBounds)?;
    Ok(key)
}

fn write(view: &MemoryView<'_>, ptr: i32, data: &[u8]) -> HostResult<()> {
    let (start, _) = span(view, ptr, data.len() as u64)?;
    view.write(start, data).map_err(|_| HostError::OutOfBounds)
}

fn len_arg(len: i32) -> u64 {
    u64::from(len as u32)
}

type Env<'a> = FunctionEnvMut<'a, HostEnv>;

fn input_len(mut env: Env<'_>) -> HostResult<i32> {
    let (env, mut store) = env.data_and_store_mut();
    env.charge(&mut store, gas::HOST_BASE)?;
    i32::try_from(env.input.len()).map_err(|_| HostError::Internal("input over 2 GiB".into()))
}

fn input_read(mut env: Env<'_>, ptr: i32) -> HostResult<()> {
    let (env, mut store) = env.data_and_store_mut();
    let len = env.input.len() as u64;
    env.charge(&mut store, price(gas::HOST_BASE, gas::COPY_PER_BYTE, len))?;
    write(&env.memory()?.view(&store), ptr, &env.input)
}

fn output(mut env: Env<'_>, ptr: i32, len: i32) -> HostResult<()> {
    let (env, mut store) = env.data_and_store_mut();
    let len = len_arg(len);
    if len > OUTPUT_LIMIT {
        return Err(HostError::ResultTooLarge { size: len });
    }
    env.charge(&mut store, price(gas::HOST_BASE, gas::COPY_PER_BYTE, len))?;
    env.output = read_vec(&env.memory()?.view(&store), ptr, len)?;
    Ok(())
}

fn storage_read(mut env: Env<'_>, key_ptr: i32) -> HostResult<i64> {
    let (env, mut store) = env.data_and_store_mut();
    env.charge(&mut store, gas::STORAGE_READ_BASE)?;
    let key = read_key(&env.memory()?.view(&store), key_ptr)?;
    match env.get(&key)? {
        Some(value) => {
            let len = value.len() as u64;
            env.charge(&mut store, price(0, gas::STORAGE_READ_PER_BYTE, len))?;
            env.register = value;
            Ok(len as i64)
        }
        None => {
            env.register.clear();
            Ok(-1)
        }
    }
}

fn storage_write(mut env: Env<'_>, key_ptr: i32, value_ptr: i32, value_len: i32) -> HostResult<()> {
    let (env, mut store) = env.data_and_store_mut();
    if env.is_view() {
        return Err(HostError::ViewCannotWrite);
    }
    let len = len_arg(value_len);
    if len > VALUE_LIMIT {
        return Err(HostError::ValueTooLarge { size: len });
    }
    env.charge(
        &mut store,
        price(gas::STORAGE_WRITE_BASE, gas::STORAGE_WRITE_PER_BYTE, 32 + len),
    )?;
    let view = env.memory()?.view(&store);
    let key = read_key(&view, key_ptr)?;
    let value = read_vec(&view, value_ptr, len)?;
    env.writes.insert(key, Some(value));
    Ok(())
}

fn storage_remove(mut env: Env<'_>, key_ptr: i32) -> HostResult<i32> {
    let (env, mut store) = env.data_and_store_mut();
    if env.is_view() {
        return Err(HostError::ViewCannotWrite);
    }
    env.charge(&mut store, gas::STORAGE_REMOVE_BASE)?;
    let key = read_key(&env.memory()?.view(&store), key_ptr)?;
    let existed = match env.get(&key)? {
        Some(value) => {
            env.charge(&mut store, price(0, gas::STORAGE_READ_PER_BYTE, value.len() as u64))?;
            true
        }
        None => false,
    };
    env.writes.insert(key, None);
    Ok(i32::from(existed))
}

fn storage_range(mut env: Env<'_>, start_ptr: i32, end_ptr: i32, limit: i32) -> HostResult<i64> {
    let (env, mut store) = env.data_and_store_mut();
    env.charge(&mut store, gas::STORAGE_RANGE_BASE)?;
    let view = env.memory()?.view(&store);
    let start = read_key(&view, start_ptr)?;
    let end = if end_ptr == -1 {
        None
    } else {
        Some(read_key(&view, end_ptr)?)
    };
    let limit = limit.clamp(0, RANGE_LIMIT as i32) as usize;
    let entries = merged_range(env, &start, end.as_ref(), limit, &mut |cost| {
        env.charge(&mut store, cost)
    })?;

    let size: u64 = 4 + entries.iter().map(|(_, value)| 36 + value.len() as u64).sum::<u64>();
    env.charge(&mut store, price(0, gas::COPY_PER_BYTE, size))?;
    let mut register = Vec::with_capacity(size as usize);
    register.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (key, value) in &entries {
        register.extend_from_slice(key);
        register.extend_from_slice(&(value.len() as u32).to_le_bytes());
        register.extend_from_slice(value);
    }
    env.register = register;
    Ok(size as i64)
}

/// Entries with `start <= key < end` of the overlay merged over the state (the overlay
/// wins; its removals hide state entries), at most `limit`. Every entry read is charged
/// as soon as it is read, including state entries the overlay hides, so that hiding many
/// large values cannot make the node read them for free.
fn merged_range(
    env: &HostEnv,
    start: &[u8; 32],
    end: Option<&[u8; 32]>,
    limit: usize,
    charge: &mut dyn FnMut(u64) -> HostResult<()>,
) -> HostResult<Vec<Entry>> {
    let mut out = Vec::new();
    if limit == 0 || end.is_some_and(|end| end <= start) {
        return Ok(out);
    }
    let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
    let mut overlay = env
        .writes
        .range::<[u8; 32], _>((Bound::Included(start), upper))
        .peekable();
    let mut page: VecDeque<Entry> = VecDeque::new();
    let mut cursor = Some(*start);
    let mut bytes = 4u64;

    while out.len() < limit {
        if page.is_empty() {
            if let Some(from) = cursor {
                let want = (limit - out.len()).min(RANGE_PAGE);
                let got = env.state().range(&from, end, want)?;
                let mut previous: Option<&[u8; 32]> = None;
                for (key, _) in &got {
                    let in_range = *key >= from && end.is_none_or(|end| key < end);
                    if !in_range || previous.is_some_and(|p| p >= key) {
                        return Err(
                            StorageError("state range returned keys out of order or out of range".into()).into(),
                        );
                    }
                    previous = Some(key);
                }
                charge(read_price(&got))?;
                cursor = if got.len() < want {
                    None
                } else {
                    got.last().and_then(|(key, _)| successor(key))
                };
                page.extend(got);
            }
        }
        let from_state = page.front().map(|(key, _)| *key);
        let from_overlay = overlay.peek().map(|(key, _)| **key);
        let take_overlay = match (from_state, from_overlay) {
            (None, None) => break,
            (Some(s), Some(o)) => o <= s,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        let (key, value) = if take_overlay {
            if from_state == from_overlay {
                page.pop_front();
            }
            let Some((key, value)) = overlay.next() else {
                break;
            };
            let Some(value) = value else {
                continue;
            };
            charge(price(
                gas::STORAGE_RANGE_PER_ENTRY,
                gas::STORAGE_RANGE_PER_BYTE,
                36 + value.len() as u64,
            ))?;
            (*key, value.clone())
        } else {
            match page.pop_front() {
                Some(entry) => entry,
                None => break,
            }
        };
        bytes += 36 + value.len() as u64;
        if bytes > RANGE_BYTES_LIMIT {
            return Err(HostError::RangeTooLarge);
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Gas for entries read from the state.
fn read_price(entries: &[Entry]) -> u64 {
    let bytes: u64 = entries.iter().map(|(_, value)| 36 + value.len() as u64).sum();
    price(
        gas::STORAGE_RANGE_PER_ENTRY.saturating_mul(entries.len() as u64),
        gas::STORAGE_RANGE_PER_BYTE,
        bytes,
    )
}

/// The next 32-byte key in big-endian order, `None` after the last one.
fn successor(key: &[u8; 32]) -> Option<[u8; 32]> {
    let mut next = *key;
    for byte in next.iter_mut().rev() {
        if *byte == u8::MAX {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(next);
        }
    }
    None
}

fn register_read(mut env: Env<'_>, ptr: i32) -> HostResult<()> {
    let (env, mut store) = env.data_and_store_mut();
    let len = env.register.len() as u64;
    env.charge(&mut store, price(gas::HOST_BASE, gas::COPY_PER_BYTE, len))?;
    write(&env.memory()?.view(&store), ptr, &env.register)
}

fn bad_event_name(name: &[u8]) -> HostError {
    HostError::BadEvent(format!(
        "event name {:?} is not [A-Za-z0-9_-]{{1,{EVENT_NAME_LIMIT}}}",
        String::from_utf8_lossy(name)
    ))
}

fn emit(mut env: Env<'_>, name_ptr: i32, name_len: i32, data_ptr: i32, data_len: i32) -> HostResult<()> {
    let (env, mut store) = env.data_and_store_mut();
    if env.is_view() {
        return Err(HostError::ViewCannotWrite);
    }
    let (name_len, data_len) = (len_arg(name_len), len_arg(data_len));
    if name_len == 0 || name_len > EVENT_NAME_LIMIT {
        return Err(HostError::BadEvent(format!(
            "event name must be 1 to {EVENT_NAME_LIMIT} characters of [A-Za-z0-9_-], got {name_len} bytes"
        )));
    }
    if data_len > EVENT_DATA_LIMIT {
        return Err(HostError::BadEvent(format!(
            "event data is {data_len} bytes, over the limit of {EVENT_DATA_LIMIT}"
        )));
    }
    env.charge(
        &mut store,
        price(gas::EMIT_BASE, gas::EMIT_PER_BYTE, name_len + data_len),
    )?;
    let view = env.memory()?.view(&store);
    let name = read_vec(&view, name_ptr, name_len)?;
    let data = read_vec(&view, data_ptr, data_len)?;
    let name = match String::from_utf8(name) {
        Ok(name) if cmesh_common::event_name::is_context_event_name(&name) => name,
        Ok(name) => return Err(bad_event_name(name.as_bytes())),
        Err(e) => return Err(bad_event_name(e.as_bytes())),
    };
    let data: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| HostError::BadEvent(format!("event data is not JSON: {e}")))?;
    env.events.push(AppEvent { name, data });
    Ok(())
}

fn write_fixed(mut env: Env<'_>, ptr: i32, pick: fn(&HostEnv) -> &[u8]) -> HostResult<()> {
    let (env, mut store) = env.data_and_store_mut();
    let data = pick(env);
    env.charge(&mut store, price(gas::HOST_BASE, gas::COPY_PER_BYTE, data.len() as u64))?;
    write(&env.memory()?.view(&store), ptr, data)
}

fn caller(env: Env<'_>, ptr: i32) -> HostResult<()> {
    write_fixed(env, ptr, |env| &env.caller)
}

fn context(env: Env<'_>, ptr: i32) -> HostResult<()> {
    write_fixed(env, ptr, |env| &env.context)
}

fn tx_id(env: Env<'_>, ptr: i32) -> HostResult<()> {
    const ZERO: [u8; 32] = [0; 32];
    write_fixed(env, ptr, |env| env.tx_id.as_ref().unwrap_or(&ZERO))
}

fn time_ms(mut env: Env<'_>) -> HostResult<i64> {
    let (env, mut store) = env.data_and_store_mut();
    env.charge(&mut store, gas::HOST_BASE)?;
    Ok(env.time_ms as i64)
}

fn log(mut env: Env<'_>, ptr: i32, len: i32) -> HostResult<()> {
    let (env, mut store) = env.data_and_store_mut();
    let len = len_arg(len);
    let kept = len.min(LOG_LINE_LIMIT);
    env.charge(&mut store, price(gas::LOG_BASE, gas::LOG_PER_BYTE, kept))?;
    let view = env.memory()?.view(&store);
    span(&view, ptr, len)?;
    let bytes = read_vec(&view, ptr, kept)?;
    if env.logs.len() < LOG_LINES_LIMIT {
        let line = String::from_utf8_lossy(&bytes).into_owned();
        tracing::debug!(app = %Hex(&env.app), "app log: {line}");
        env.logs.push(line);
    }
    Ok(())
}

fn panic(mut env: Env<'_>, ptr: i32, len: i32) -> HostResult<()> {
    let (env, mut store) = env.data_and_store_mut();
    env.charge(&mut store, gas::PANIC_BASE)?;
    let len = len_arg(len);
    let view = env.memory()?.view(&store);
    span(&view, ptr, len)?;
    let bytes = read_vec(&view, ptr, len.min(PANIC_MESSAGE_LIMIT))?;
    Err(HostError::Panic(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Lower-case hex for log fields.
pub(crate) struct Hex<'a>(pub &'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MapState;
    use proptest::prelude::*;

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn successor_carries_and_ends() {
        let mut key = [0u8; 32];
        key[31] = 0xff;
        let mut next = [0u8; 32];
        next[30] = 1;
        assert_eq!(successor(&key), Some(next));
        assert_eq!(successor(&[0xff; 32]), None);
    }

    proptest! {
        /// The overlay merged over the state, paged through `StateReader::range`, equals
        /// the model: the state with the overlay applied, then ranged.
        #[test]
        fn merged_range_matches_a_model(
            state in proptest::collection::btree_map(any::<u8>(), proptest::collection::vec(any::<u8>(), 0..3), 0..200),
            overlay in proptest::collection::btree_map(any::<u8>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3)), 0..60),
            start in any::<u8>(),
            end in proptest::option::of(any::<u8>()),
            limit in 0usize..300,
        ) {
            let reader = MapState(state.iter().map(|(n, v)| (key(*n), v.clone())).collect());
            let call = super::super::Call {
                method: "m",
                input: b"",
                caller: [0; 20],
                context: [0; 32],
                tx_id: Some([1; 32]),
                time_ms: 0,
                gas_limit: None,
            };
            // SAFETY: `env` is dropped before `reader`.
            let mut env = unsafe { HostEnv::new([0; 32], &call, &reader) };
            env.writes = overlay.iter().map(|(n, v)| (key(*n), v.clone())).collect();
            let end_key = end.map(key);
            let got = merged_range(&env, &key(start), end_key.as_ref(), limit, &mut |_| Ok(()))
                .expect("merged range");

            let mut model = reader.0.clone();
            for (k, v) in &env.writes {
                match v {
                    Some(v) => model.insert(*k, v.clone()),
                    None => model.remove(k),
                };
            }
            let expected: Vec<Entry> = model
                .range(key(start)..)
                .take_while(|(k, _)| end_key.is_none_or(|e| **k < e))
                .take(limit)
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            prop_assert_eq!(got, expected);
        }
    }
}
