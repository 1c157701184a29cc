//! Every guest memory read and write, and every guest allocation, goes
//! through this module. Each address and length is bounds-checked; a bad one
//! is `INVALID_MEMORY_ACCESS` (ABI reference §5.3, §5.4).
//!
//! Returning data to the guest follows cpp-host `copyToPointerSize`: the
//! host checks the two out-pointers, calls the guest allocator with exactly
//! the blob size (never for 0 bytes, which gives ptr 0 / size 0), copies the
//! blob in, then writes the pointer and size as u32 little-endian.

use std::ops::Range;

use vessel_abi::Status;
use wasmtime::{AsContextMut, Caller};

use crate::ids::ContextId;
use crate::state::HostState;

/// Why a hostcall did not return OK: a status for the guest, or a trap.
#[derive(Debug)]
pub(crate) enum Fail {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for Fail {
    fn from(s: Status) -> Self {
        Self::Status(s)
    }
}

impl From<wasmtime::Error> for Fail {
    fn from(e: wasmtime::Error) -> Self {
        Self::Trap(e)
    }
}

/// A limit a hostcall cannot report with a status the SDKs accept: it
/// stops the guest, and the VM fails with [`TrapKind::Limit`](crate::TrapKind::Limit).
impl From<crate::limits::LimitExceeded> for Fail {
    fn from(limit: crate::limits::LimitExceeded) -> Self {
        Self::Trap(wasmtime::Error::new(limit))
    }
}

/// The result of a hostcall body.
pub(crate) type HostResult<T = ()> = Result<T, Fail>;

/// Converts a hostcall body's result into the i32 the guest sees.
pub(crate) fn to_abi(r: HostResult) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(Status::Ok.as_u32() as i32),
        Err(Fail::Status(s)) => Ok(s.as_u32() as i32),
        Err(Fail::Trap(e)) => Err(e),
    }
}

/// Reinterprets a guest i32 as the u32 it is.
pub(crate) const fn u(v: i32) -> u32 {
    v as u32
}

/// Checks `[ptr, ptr + len)` against a memory of `mem_len` bytes.
pub(crate) fn range(mem_len: usize, ptr: i32, len: i32) -> Result<Range<usize>, Status> {
    let start = u(ptr) as usize;
    let end = start
        .checked_add(u(len) as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    if end > mem_len {
        return Err(Status::InvalidMemoryAccess);
    }
    Ok(start..end)
}

/// Borrows `len` guest bytes at `ptr`.
pub(crate) fn read(mem: &[u8], ptr: i32, len: i32) -> Result<&[u8], Status> {
    let r = range(mem.len(), ptr, len)?;
    Ok(&mem[r])
}

/// Writes a u32 little-endian at `ptr`.
pub(crate) fn write_u32(mem: &mut [u8], ptr: i32, v: u32) -> Result<(), Status> {
    let r = range(mem.len(), ptr, 4)?;
    mem[r].copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Writes a u64 little-endian at `ptr`.
pub(crate) fn write_u64(mem: &mut [u8], ptr: i32, v: u64) -> Result<(), Status> {
    let r = range(mem.len(), ptr, 8)?;
    mem[r].copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Runs `f` with the guest memory and the host state borrowed together.
pub(crate) fn with_mem<R>(
    caller: &mut Caller<'_, HostState>,
    f: impl FnOnce(&mut [u8], &mut HostState) -> R,
) -> Result<R, Status> {
    let memory = caller.data().memory.ok_or(Status::InternalFailure)?;
    let (mem, state) = memory.data_and_store_mut(caller.as_context_mut());
    Ok(f(mem, state))
}

/// Calls the guest allocator for `len` bytes (`len > 0`). The caller must
/// check that the returned range lies in guest memory before writing it
/// ([`return_checked_blob`] does, in the borrow that writes). The allocator
/// runs with the VM context (id 0) current.
pub(crate) fn alloc(caller: &mut Caller<'_, HostState>, len: usize) -> HostResult<u32> {
    let size = i32::try_from(len).map_err(|_| Status::InvalidMemoryAccess)?;
    let state = caller.data_mut();
    // Taken out for the call (not cloned: a clone costs atomic reference
    // counts), put back after. Hostcalls that allocate trap inside the
    // allocator, so no nested `alloc` finds the slot empty.
    let func = state.allocator.take().ok_or(Status::InternalFailure)?;
    let saved = (
        state.frame.current,
        state.frame.effective,
        state.in_allocator,
    );
    state.frame.current = ContextId(0);
    state.frame.effective = None;
    state.in_allocator = true;
    let result = func.call(caller.as_context_mut(), size);
    let state = caller.data_mut();
    state.allocator = Some(func);
    (
        state.frame.current,
        state.frame.effective,
        state.in_allocator,
    ) = saved;
    let ptr = result?;
    if ptr == 0 {
        return Err(Status::InvalidMemoryAccess.into());
    }
    Ok(u(ptr))
}

/// Returns a blob of `len` bytes to the guest: checks the out-pointers,
/// allocates (unless `len` is 0), lets `fill` write the bytes, and stores the
/// pointer and size. `fill` gets exactly `len` bytes.
pub(crate) fn return_blob(
    caller: &mut Caller<'_, HostState>,
    ret_ptr: i32,
    ret_size: i32,
    len: usize,
    fill: impl FnOnce(&mut [u8], &HostState) -> Result<(), Status>,
) -> HostResult {
    with_mem(caller, |mem, _| check_ret(mem, ret_ptr, ret_size))??;
    return_checked_blob(caller, ret_ptr, ret_size, len, fill)
}

/// Checks the out-pointers of a returned blob (see [`return_blob`]).
pub(crate) fn check_ret(mem: &[u8], ret_ptr: i32, ret_size: i32) -> Result<(), Status> {
    range(mem.len(), ret_ptr, 4)?;
    range(mem.len(), ret_size, 4).map(|_| ())
}

/// [`return_blob`] after the caller checked the out-pointers with
/// [`check_ret`] (guest memory never shrinks, so they stay valid).
pub(crate) fn return_checked_blob(
    caller: &mut Caller<'_, HostState>,
    ret_ptr: i32,
    ret_size: i32,
    len: usize,
    fill: impl FnOnce(&mut [u8], &HostState) -> Result<(), Status>,
) -> HostResult {
    if len == 0 {
        return with_mem(caller, |mem, _| {
            write_u32(mem, ret_ptr, 0)?;
            write_u32(mem, ret_size, 0)
        })?
        .map_err(Fail::from);
    }
    let ptr = alloc(caller, len)?;
    with_mem(caller, |mem, state| {
        // The allocator's answer must lie in guest memory.
        let size = i32::try_from(len).map_err(|_| Status::InvalidMemoryAccess)?;
        let dst = range(mem.len(), ptr as i32, size)?;
        fill(&mut mem[dst], state)?;
        write_u32(mem, ret_ptr, ptr)?;
        write_u32(mem, ret_size, len as u32)
    })?
    .map_err(Fail::from)
}

/// Copies `src` into `dst`, which must be the same length (else INTERNAL_FAILURE).
pub(crate) fn fill(dst: &mut [u8], src: &[u8]) -> Result<(), Status> {
    if dst.len() != src.len() {
        return Err(Status::InternalFailure);
    }
    dst.copy_from_slice(src);
    Ok(())
}

/// Returns owned bytes to the guest (see [`return_blob`]).
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    ret_ptr: i32,
    ret_size: i32,
    bytes: &[u8],
) -> HostResult {
    return_blob(caller, ret_ptr, ret_size, bytes.len(), |dst, _| {
        fill(dst, bytes)
    })
}

/// Writes one u32 result.
pub(crate) fn return_u32(caller: &mut Caller<'_, HostState>, ptr: i32, v: u32) -> HostResult {
    with_mem(caller, |mem, _| write_u32(mem, ptr, v))?.map_err(Fail::from)
}

/// Writes one u64 result.
pub(crate) fn return_u64(caller: &mut Caller<'_, HostState>, ptr: i32, v: u64) -> HostResult {
    with_mem(caller, |mem, _| write_u64(mem, ptr, v))?.map_err(Fail::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_bounds_checked() {
        assert_eq!(range(10, 0, 0), Ok(0..0));
        assert_eq!(range(10, 10, 0), Ok(10..10));
        assert_eq!(range(10, 6, 4), Ok(6..10));
        assert_eq!(range(10, 7, 4), Err(Status::InvalidMemoryAccess));
        assert_eq!(range(10, -1, 1), Err(Status::InvalidMemoryAccess));
        assert_eq!(range(10, 1, -1), Err(Status::InvalidMemoryAccess));
        assert_eq!(
            range(usize::MAX, -1, -1).map(|r| r.len()),
            Ok(u32::MAX as usize)
        );
    }

    #[test]
    fn little_endian_writes() {
        let mut m = [0u8; 12];
        write_u32(&mut m, 0, 0x0102_0304).expect("in range");
        write_u64(&mut m, 4, 0x0102_0304_0506_0708).expect("in range");
        assert_eq!(m, [4, 3, 2, 1, 8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(write_u32(&mut m, 9, 0), Err(Status::InvalidMemoryAccess));
    }
}
