//! Linear memories taken from a pool of reusable mappings.
//!
//! Every call instantiates its module afresh. With wasmer's own memories that means
//! reserving 8 GiB of address space, taking a page fault on every page touched and
//! unmapping it all again: most of the cost of a small call. Here a mapping is reused:
//! when an instance is dropped the pages it used are zeroed (see [`Region::zero`]) and the
//! mapping goes back to the pool, so the next instance starts from memory
//! indistinguishable from a fresh one.
//!
//! Memories use wasmer's "dynamic" style with no offset guard: compiled code checks every
//! access against the memory's current length, so a mapping can stay read-write up to the
//! node's memory limit. Growing a memory, or starting the next instance smaller, is then a
//! change of that length, never an `mprotect` (which on a multi-threaded process also
//! interrupts every other core to flush its TLB).

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use wasmer::sys::vm::{LinearMemory, MemoryError, MemoryStyle, VMMemoryDefinition};
use wasmer::{MemoryType, Pages};

use super::engine::POOLED_MEMORY_STYLE;

/// Idle mappings kept; more are unmapped when returned.
const MAX_IDLE: usize = 16;
/// Touched pages a mapping keeps resident (zeroed) for its next instance; the idle
/// pool holds at most `MAX_IDLE` times this.
#[cfg(target_os = "linux")]
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    })
}

/// Whether the system has swap now. Without it, a private anonymous page that is not
/// resident was never written (or was dropped), so it reads as zeros; and swap cannot
/// hold pages of ours it is not there to receive.
#[cfg(target_os = "linux")]
fn swap_configured() -> bool {
    let mut info = std::mem::MaybeUninit::<libc::sysinfo>::zeroed();
    // SAFETY: sysinfo only writes the struct it is given.
    if unsafe { libc::sysinfo(info.as_mut_ptr()) } != 0 {
        return true;
    }
    // SAFETY: zero-initialized (a valid value: integers and padding) and then filled in.
    unsafe { info.assume_init() }.totalswap != 0
}

#[cfg(target_os = "linux")]
const MAP_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANON | libc::MAP_NORESERVE;
#[cfg(not(target_os = "linux"))]
const MAP_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANON;

/// Mappings not in use, all of the same size.
#[derive(Debug)]
pub(crate) struct MemoryPool {
    /// Bytes of every mapping: the largest memory an instance may have.
    region_bytes: usize,
    idle: Mutex<Vec<Region>>,
}

impl MemoryPool {
    /// A pool of mappings of `max_pages` wasm pages.
    pub(crate) fn new(max_pages: Pages) -> Self {
        MemoryPool {
            region_bytes: max_pages.bytes().0,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Result<Region, MemoryError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(region) => Ok(region),
            None => Region::map(self.region_bytes),
        }
    }

    /// Zeroes `region` and keeps it for reuse (or unmaps it if the pool is full or zeroing
    /// failed: memory that may hold an earlier instance's data is never handed out).
    fn give(&self, mut region: Region) {
        if self.idle.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_IDLE {
            return;
        }
        if let Err(e) = region.zero() {
            tracing::warn!("cannot reset a linear memory: {e}");
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(region);
        }
    }
}

/// One read-write mapping, of which the first `used` bytes may have been written since it
/// was last zeroed (the rest is zero).
#[derive(Debug)]
struct Region {
    base: NonNull<u8>,
    bytes: usize,
    used: usize,
    /// `mincore` output, kept to avoid an allocation per reset.
    #[cfg(target_os = "linux")]
    residency: Vec<u8>,
}

// SAFETY: a `Region` exclusively owns its mapping; nothing in it is tied to a thread.
unsafe impl Send for Region {}

impl Region {
    fn map(bytes: usize) -> Result<Region, MemoryError> {
        // SAFETY: a new private anonymous mapping at an address the kernel picks; it
        // overlaps nothing that exists.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                MAP_FLAGS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MemoryError::Region(format!(
                "cannot map {bytes} bytes of memory: {}",
                std::io::Error::last_os_error()
            )));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| MemoryError::Region("mmap returned null".into()))?;
        Ok(Region {
            base,
            bytes,
            used: 0,
            #[cfg(target_os = "linux")]
            residency: Vec::new(),
        })
    }

    /// Notes that the first `bytes` may now be written (no system call: the mapping is
    /// read-write throughout, and compiled code checks accesses against the length).
    fn expose(&mut self, bytes: usize) -> Result<(), MemoryError> {
        if bytes > self.bytes {
            return Err(MemoryError::Region(format!(
                "{bytes} bytes requested from a mapping of {}",
                self.bytes
            )));
        }
        self.used = self.used.max(bytes);
        Ok(())
    }

    /// Zeroes the bytes used since the last reset.
    ///
    /// Pages the last instance touched are still resident: up to [`KEEP_RESIDENT_BYTES`]
    /// of them are overwritten with zeros and kept, so that the next instance touching
    /// the same addresses (a module's data, stack and first heap pages) takes no page
    /// faults. Every other resident page is dropped with `MADV_DONTNEED`, after which
    /// private anonymous pages read as zeros. Non-resident pages are zero unless they were
    /// swapped out, so they are dropped too when the system has swap.
    #[cfg(target_os = "linux")]
    fn zero(&mut self) -> std::io::Result<()> {
        if self.used == 0 {
            return Ok(());
        }
        let page = page_size();
        let pages = self.used / page;
        self.residency.clear();
        self.residency.resize(pages, 0);
        let base = self.base.as_ptr();
        // SAFETY: the range is mapped (inside the mapping) and `residency` holds one
        // byte per page of it.
        if unsafe { libc::mincore(base.cast(), self.used, self.residency.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let swap = swap_configured();
        let mut budget = KEEP_RESIDENT_BYTES;
        let mut start = 0;
        while start < pages {
            let resident = self.residency[start] & 1 == 1;
            let end = self.residency[start..]
                .iter()
                .position(|r| (r & 1 == 1) != resident)
                .map_or(pages, |n| start + n);
            let (offset, len) = (start * page, (end - start) * page);
            if resident && len <= budget {
                budget -= len;
                // SAFETY: read-write pages of this mapping (within `used`), which
                // nothing references any more: the instance using them is gone.
                unsafe { std::ptr::write_bytes(base.add(offset), 0, len) };
            } else if resident || swap {
                // SAFETY: as above; MADV_DONTNEED only discards the pages' contents.
                if unsafe { libc::madvise(base.add(offset).cast(), len, libc::MADV_DONTNEED) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            start = end;
        }
        self.used = 0;
        Ok(())
    }

    /// Zeroes the used bytes by mapping fresh pages over them (elsewhere
    /// MADV_DONTNEED does not guarantee zeros).
    #[cfg(not(target_os = "linux"))]
    fn zero(&mut self) -> std::io::Result<()> {
        if self.used == 0 {
            return Ok(());
        }
        // SAFETY: MAP_FIXED replaces only pages of our own mapping, which nothing
        // references any more.
        let ptr = unsafe {
            libc::mmap(
                self.base.as_ptr().cast(),
                self.used,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANON | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        self.used = 0;
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this region owns.
        let result = unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
        if result != 0 {
            tracing::warn!("cannot unmap a linear memory: {}", std::io::Error::last_os_error());
        }
    }
}

/// A linear memory of one instance, in a pooled [`Region`].
#[derive(Debug)]
pub(crate) struct PooledMemory {
    region: Option<Region>,
    pool: Arc<MemoryPool>,
    /// Where compiled code reads the memory's base and length (inside the instance).
    definition: NonNull<VMMemoryDefinition>,
    /// The declared type, maximum already capped at the node's limit.
    ty: MemoryType,
    pages: Pages,
}

// SAFETY: like wasmer's own `VMOwnedMemory`: the memory and its definition are only used
// through the store owning the instance, which wasmer does not share between threads
// while it runs.
unsafe impl Send for PooledMemory {}
// SAFETY: as above; `&PooledMemory` gives no way to mutate anything.
unsafe impl Sync for PooledMemory {}

impl PooledMemory {
    /// A memory of `ty.minimum` zeroed pages.
    ///
    /// # Safety
    ///
    /// `definition` must be valid for writes for as long as the memory lives (wasmer
    /// guarantees this for the location it passes to `Tunables::create_vm_memory`).
    pub(crate) unsafe fn new(
        pool: &Arc<MemoryPool>,
        ty: MemoryType,
        definition: NonNull<VMMemoryDefinition>,
    ) -> Result<PooledMemory, MemoryError> {
        if ty.shared || ty.minimum > Pages::max_value() {
            return Err(MemoryError::InvalidMemory {
                reason: "unsupported memory type".into(),
            });
        }
        let mut region = pool.take()?;
        let bytes = ty.minimum.bytes().0;
        region.expose(bytes)?;
        // SAFETY: the caller guarantees `definition` is valid for writes.
        unsafe {
            definition.as_ptr().write(VMMemoryDefinition {
                base: region.base.as_ptr(),
                current_length: bytes,
            });
        }
        Ok(PooledMemory {
            region: Some(region),
            pool: pool.clone(),
            definition,
            pages: ty.minimum,
            ty,
        })
    }
}

impl LinearMemory for PooledMemory {
    fn ty(&self) -> MemoryType {
        MemoryType {
            minimum: self.pages,
            ..self.ty
        }
    }

    fn size(&self) -> Pages {
        self.pages
    }

    fn style(&self) -> MemoryStyle {
        POOLED_MEMORY_STYLE
    }

    fn grow(&mut self, delta: Pages) -> Result<Pages, MemoryError> {
        let refused = MemoryError::CouldNotGrow {
            current: self.pages,
            attempted_delta: delta,
        };
        if delta.0 == 0 {
            return Ok(self.pages);
        }
        let new = self.pages.checked_add(delta).ok_or(refused.clone())?;
        let maximum = self.ty.maximum.unwrap_or(Pages::max_value());
        if new > maximum || new > Pages::max_value() {
            return Err(refused);
        }
        let region = self.region.as_mut().ok_or(refused)?;
        region.expose(new.bytes().0)?;
        // SAFETY: valid for writes while the memory lives (see `new`).
        unsafe {
            (*self.definition.as_ptr()).current_length = new.bytes().0;
        }
        let previous = self.pages;
        self.pages = new;
        Ok(previous)
    }

    fn grow_at_least(&mut self, min_size: u64) -> Result<(), MemoryError> {
        let current = self.pages.bytes().0 as u64;
        if current < min_size {
            let pages = (min_size - current).div_ceil(wasmer::WASM_PAGE_SIZE as u64);
            let pages = u32::try_from(pages).map_err(|_| MemoryError::CouldNotGrow {
                current: self.pages,
                attempted_delta: Pages::max_value(),
            })?;
            self.grow(Pages(pages))?;
        }
        Ok(())
    }

    fn vmmemory(&self) -> NonNull<VMMemoryDefinition> {
        self.definition
    }

    fn try_clone(&self) -> Result<Box<dyn LinearMemory + Send + Sync + 'static>, MemoryError> {
        Err(MemoryError::MemoryNotShared)
    }

    fn copy(&self) -> Result<Box<dyn LinearMemory + Send + Sync + 'static>, MemoryError> {
        Err(MemoryError::UnsupportedOperation {
            message: "pooled memories cannot be copied".into(),
        })
    }
}

impl Drop for PooledMemory {
    fn drop(&mut self) {
        if let Some(region) = self.region.take() {
            self.pool.give(region);
        }
    }
}
