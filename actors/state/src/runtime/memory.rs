//! Linear memories taken from a pool of address-space reservations.
//!
//! Every call instantiates its module afresh, and with wasmer's own memories that means
//! reserving 8 GiB of address space, making the initial pages accessible, taking a page
//! fault on every page touched and unmapping it all again: most of the cost of a small
//! call. Here a reservation is reused: when an instance is dropped its pages are zeroed
//! (see [`Region::zero`]) and the reservation goes back to the pool, so the next instance
//! starts from memory indistinguishable from a fresh mapping.
//!
//! The layout is wasmer's "static" one, which compiled code relies on for bounds checks:
//! 4 GiB for the wasm32 address space plus a 4 GiB (+ 1 page) guard, all inaccessible
//! except the memory's current pages.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use wasmer::sys::vm::{LinearMemory, MemoryError, MemoryStyle, VMMemoryDefinition};
use wasmer::{MemoryType, Pages};

/// Idle reservations kept; more are unmapped when returned.
const MAX_IDLE: usize = 16;
/// Touched pages a reservation keeps resident (zeroed) for its next instance; the idle
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
const RESERVE_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANON | libc::MAP_NORESERVE;
#[cfg(not(target_os = "linux"))]
const RESERVE_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANON;

fn reservation_bytes() -> usize {
    MemoryStyle::static_bound().bytes().0 + MemoryStyle::static_offset_guard_size() as usize
}

/// Reservations not in use.
#[derive(Debug, Default)]
pub(crate) struct MemoryPool {
    idle: Mutex<Vec<Region>>,
}

impl MemoryPool {
    fn take(&self) -> Result<Region, MemoryError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(region) => Ok(region),
            None => Region::reserve(),
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

/// One reservation of [`reservation_bytes`], of which the first `accessible` bytes are
/// read-write and the rest inaccessible.
#[derive(Debug)]
struct Region {
    base: NonNull<u8>,
    accessible: usize,
    /// `mincore` output, kept to avoid an allocation per reset.
    #[cfg(target_os = "linux")]
    residency: Vec<u8>,
}

// SAFETY: a `Region` exclusively owns its mapping; nothing in it is tied to a thread.
unsafe impl Send for Region {}

impl Region {
    fn reserve() -> Result<Region, MemoryError> {
        // SAFETY: a new private anonymous mapping at an address the kernel picks; it
        // overlaps nothing that exists.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reservation_bytes(),
                libc::PROT_NONE,
                RESERVE_FLAGS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MemoryError::Region(format!(
                "cannot reserve memory: {}",
                std::io::Error::last_os_error()
            )));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| MemoryError::Region("mmap returned null".into()))?;
        Ok(Region {
            base,
            accessible: 0,
            #[cfg(target_os = "linux")]
            residency: Vec::new(),
        })
    }

    /// Makes exactly the first `bytes` (a multiple of the page size, at most 4 GiB)
    /// accessible.
    fn set_accessible(&mut self, bytes: usize) -> std::io::Result<()> {
        let (start, len, protection) = match bytes.cmp(&self.accessible) {
            std::cmp::Ordering::Equal => return Ok(()),
            std::cmp::Ordering::Greater => (
                self.accessible,
                bytes - self.accessible,
                libc::PROT_READ | libc::PROT_WRITE,
            ),
            std::cmp::Ordering::Less => (bytes, self.accessible - bytes, libc::PROT_NONE),
        };
        // SAFETY: `start..start + len` lies inside the reservation (both sizes are at most
        // 4 GiB, the reservation is over 8 GiB) and Rust holds no reference into it: wasm
        // code and wasmer's bounds-checked accessors only reach it through raw pointers.
        let result = unsafe { libc::mprotect(self.base.as_ptr().add(start).cast(), len, protection) };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.accessible = bytes;
        Ok(())
    }

    /// Zeroes the accessible bytes.
    ///
    /// Pages the last instance touched are still resident: up to [`KEEP_RESIDENT_BYTES`]
    /// of them are overwritten with zeros and kept, so that the next instance touching
    /// the same addresses (a module's data, stack and first heap pages) takes no page
    /// faults. Every other resident page is dropped with `MADV_DONTNEED`, after which
    /// private anonymous pages read as zeros. Non-resident pages are zero unless they were
    /// swapped out, so they are dropped too when the system has swap.
    #[cfg(target_os = "linux")]
    fn zero(&mut self) -> std::io::Result<()> {
        if self.accessible == 0 {
            return Ok(());
        }
        let page = page_size();
        let pages = self.accessible / page;
        self.residency.clear();
        self.residency.resize(pages, 0);
        let base = self.base.as_ptr();
        // SAFETY: the range is mapped (inside the reservation) and `residency` holds one
        // byte per page of it.
        if unsafe { libc::mincore(base.cast(), self.accessible, self.residency.as_mut_ptr()) } != 0 {
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
                // SAFETY: read-write pages of this reservation (within `accessible`), which
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
        Ok(())
    }

    /// Zeroes the accessible bytes by mapping fresh pages over them (elsewhere
    /// MADV_DONTNEED does not guarantee zeros).
    #[cfg(not(target_os = "linux"))]
    fn zero(&mut self) -> std::io::Result<()> {
        if self.accessible == 0 {
            return Ok(());
        }
        // SAFETY: MAP_FIXED replaces only pages of our own reservation, which nothing
        // references any more.
        let ptr = unsafe {
            libc::mmap(
                self.base.as_ptr().cast(),
                self.accessible,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANON | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the reservation this region owns.
        let result = unsafe { libc::munmap(self.base.as_ptr().cast(), reservation_bytes()) };
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
        region
            .set_accessible(bytes)
            .map_err(|e| MemoryError::Region(e.to_string()))?;
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
        MemoryStyle::Static
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
        region
            .set_accessible(new.bytes().0)
            .map_err(|e| MemoryError::Region(e.to_string()))?;
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
