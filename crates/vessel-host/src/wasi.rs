//! A locked-down WASI preview1, registered under both
//! `wasi_snapshot_preview1` and `wasi_unstable` (ABI reference §7, §11.19,
//! §11.23, §11.24).
//!
//! vessel implements this subset itself instead of linking `wasmtime-wasi`:
//! the core stays sans-IO (time comes from the injected [`Clock`](crate::Clock),
//! never the OS), nothing can block a worker, and each function returns
//! exactly what Envoy's host (cpp-host `src/exports.cc`) returns, which is
//! what Go, TinyGo, Rust and Emscripten guests are tested against.
//! `docs/wasi.md` measures it against wasmtime-wasi's preview1
//! (`benches/wasi`) and gives the reasons for the choice. What it does:
//!
//! * no filesystem: `path_open` → NOENT, `fd_prestat_get` → BADF (no
//!   preopens), other `path_*` → NOTSUP, `fd_read` → NOSYS;
//! * `fd_write`/`fd_pwrite` to fd 1 and 2 become guest log lines at INFO and
//!   ERROR, with one trailing newline stripped; other fds → BADF;
//! * environment variables only as configured in
//!   [`PluginConfig::environment`](crate::PluginConfig::environment); no arguments;
//! * `clock_time_get`: REALTIME and MONOTONIC from the clock, others → NOTSUP;
//! * `random_get`: at most 64 KiB per call (INVAL above);
//! * `poll_oneoff`: returns at once with 0 events and success (Go's runtime
//!   needs success; it must never block a worker);
//! * `proc_exit`: stops the guest. During start-up (`_start`, `_initialize`)
//!   `proc_exit(0)` counts as a normal return; any other exit fails the VM
//!   with [`TrapKind::ProcExit`](crate::TrapKind::ProcExit). (Envoy only logs
//!   and returns, which lets the guest run on past a `noreturn` call.)
//! * sockets → NOTSUP.
//!
//! Each function is a named Rust function of the same name as its import
//! (`fd_write` is `fn fd_write`), registered under both module names by the
//! `wasi!` list in `add_to_linker`.
//!
//! A function left out of
//! [`PluginConfig::allowed_capabilities`](crate::PluginConfig::allowed_capabilities)
//! is replaced by a stub returning `ENOTCAPABLE` (76) under both module
//! names; a restricted `proc_exit` traps ([`crate::hostcalls::capabilities`]).

use vessel_abi::LogLevel;
use wasmtime::{Caller, ValType};

use crate::hostcalls::Registry;
use crate::hostcalls::log::emit;
use crate::memory::{range, read, u, with_mem, write_u32, write_u64};
use crate::state::HostState;
use errno::{BADF, FAULT, INVAL, NOENT, NOSYS, NOTDIR, NOTSUP, SUCCESS};

/// WASI errno values used here.
pub mod errno {
    /// Success.
    pub const SUCCESS: i32 = 0;
    /// Bad file descriptor.
    pub const BADF: i32 = 8;
    /// Bad address.
    pub const FAULT: i32 = 21;
    /// Invalid argument.
    pub const INVAL: i32 = 28;
    /// No such file or directory.
    pub const NOENT: i32 = 44;
    /// Function not supported.
    pub const NOSYS: i32 = 52;
    /// Not a directory.
    pub const NOTDIR: i32 = 54;
    /// Not supported.
    pub const NOTSUP: i32 = 58;
}

/// Largest `random_get` request.
pub const MAX_RANDOM_BYTES: u32 = 65_536;

/// Largest single `fd_write` passed to the log.
const MAX_WRITE_BYTES: usize = 1 << 20;

/// The error a `proc_exit` call raises to unwind the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the guest called proc_exit({0})")]
pub struct ProcExit(pub i32);

/// Registers WASI function `name` under `module`: the function of that name
/// in this file, with these `i32`/`i64` parameters and an errno result.
macro_rules! wasi {
    ($reg:expr, $module:expr, $name:ident($($arg:ident : $ty:ty),*)) => {{
        $reg.record(
            $module,
            stringify!($name),
            vec![$(<$ty as crate::hostcalls::AbiTy>::TY),*],
            vec![ValType::I32],
        );
        $reg.linker.func_wrap(
            $module,
            stringify!($name),
            |mut caller: Caller<'_, HostState> $(, $arg: $ty)*| -> i32 {
                $name(&mut caller $(, $arg)*)
            },
        )?;
    }};
}

fn is_std(fd: i32) -> bool {
    fd == 1 || fd == 2
}

/// `fd_write`: stdout and stderr become guest log lines (INFO, ERROR);
/// other fds → BADF.
fn fd_write(caller: Wasi<'_, '_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> i32 {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return BADF,
    };
    let r = with_mem(caller, |mem, state| {
        let n = u(iovs_len) as usize;
        let table = read(
            mem,
            iovs,
            i32::try_from(n.checked_mul(8).ok_or(())?).map_err(|_| ())?,
        )
        .map_err(|_| ())?;
        let mut out = Vec::new();
        let mut total: u64 = 0;
        for iov in table.chunks_exact(8) {
            let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
            let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
            let bytes = read(mem, ptr as i32, len as i32).map_err(|_| ())?;
            total += u64::from(len);
            if out.len() < MAX_WRITE_BYTES {
                out.extend_from_slice(&bytes[..bytes.len().min(MAX_WRITE_BYTES - out.len())]);
            }
        }
        let msg = out.strip_suffix(b"\n").unwrap_or(&out);
        let ctx = state.frame.current;
        emit(state, level, ctx, msg);
        write_u32(mem, nwritten, u32::try_from(total).unwrap_or(u32::MAX)).map_err(|_| ())
    });
    match r {
        Ok(Ok(())) => SUCCESS,
        _ => FAULT,
    }
}

/// Adds every WASI function under `module`.
pub(crate) fn add_to_linker(reg: &mut Registry, module: &'static str) -> wasmtime::Result<()> {
    wasi!(reg, module, fd_write(fd: i32, iovs: i32, iovs_len: i32, nwritten: i32));
    wasi!(reg, module, fd_pwrite(fd: i32, iovs: i32, iovs_len: i32, offset: i64, nwritten: i32));
    wasi!(reg, module, fd_read(fd: i32, iovs: i32, iovs_len: i32, nread: i32));
    wasi!(reg, module, fd_pread(fd: i32, iovs: i32, iovs_len: i32, offset: i64, nread: i32));
    wasi!(reg, module, fd_seek(fd: i32, offset: i64, whence: i32, newoffset: i32));
    wasi!(reg, module, fd_close(fd: i32));
    wasi!(reg, module, fd_fdstat_get(fd: i32, stat: i32));
    wasi!(reg, module, fd_fdstat_set_flags(fd: i32, flags: i32));
    wasi!(reg, module, fd_fdstat_set_rights(fd: i32, base: i64, inheriting: i64));
    wasi!(reg, module, fd_prestat_get(fd: i32, prestat: i32));
    wasi!(reg, module, fd_prestat_dir_name(fd: i32, path: i32, path_len: i32));
    wasi!(reg, module, fd_filestat_get(fd: i32, stat: i32));
    wasi!(reg, module, fd_filestat_set_size(fd: i32, size: i64));
    wasi!(reg, module, fd_filestat_set_times(fd: i32, atim: i64, mtim: i64, flags: i32));
    wasi!(reg, module, fd_advise(fd: i32, offset: i64, len: i64, advice: i32));
    wasi!(reg, module, fd_allocate(fd: i32, offset: i64, len: i64));
    wasi!(reg, module, fd_datasync(fd: i32));
    wasi!(reg, module, fd_sync(fd: i32));
    wasi!(reg, module, fd_tell(fd: i32, offset: i32));
    wasi!(reg, module, fd_readdir(fd: i32, buf: i32, buf_len: i32, cookie: i64, used: i32));
    wasi!(reg, module, fd_renumber(fd: i32, to: i32));
    wasi!(reg, module, path_open(
        fd: i32, dirflags: i32, path: i32, path_len: i32, oflags: i32,
        rights_base: i64, rights_inheriting: i64, fdflags: i32, opened: i32
    ));
    wasi!(reg, module, path_filestat_get(fd: i32, flags: i32, path: i32, path_len: i32, stat: i32));
    wasi!(reg, module, path_filestat_set_times(
        fd: i32, flags: i32, path: i32, path_len: i32, atim: i64, mtim: i64, fst_flags: i32
    ));
    wasi!(reg, module, path_create_directory(fd: i32, path: i32, path_len: i32));
    wasi!(reg, module, path_remove_directory(fd: i32, path: i32, path_len: i32));
    wasi!(reg, module, path_unlink_file(fd: i32, path: i32, path_len: i32));
    wasi!(reg, module, path_link(
        old_fd: i32, old_flags: i32, old_path: i32, old_path_len: i32,
        new_fd: i32, new_path: i32, new_path_len: i32
    ));
    wasi!(reg, module, path_rename(
        fd: i32, old_path: i32, old_path_len: i32, new_fd: i32, new_path: i32, new_path_len: i32
    ));
    wasi!(reg, module, path_symlink(
        old_path: i32, old_path_len: i32, fd: i32, new_path: i32, new_path_len: i32
    ));
    wasi!(reg, module, path_readlink(
        fd: i32, path: i32, path_len: i32, buf: i32, buf_len: i32, used: i32
    ));
    wasi!(reg, module, environ_sizes_get(count: i32, size: i32));
    wasi!(reg, module, environ_get(environ: i32, buf: i32));
    wasi!(reg, module, args_sizes_get(count: i32, size: i32));
    wasi!(reg, module, args_get(argv: i32, buf: i32));
    wasi!(reg, module, clock_time_get(id: i32, precision: i64, time: i32));
    wasi!(reg, module, clock_res_get(id: i32, resolution: i32));
    wasi!(reg, module, random_get(buf: i32, buf_len: i32));
    wasi!(reg, module, sched_yield());
    wasi!(reg, module, poll_oneoff(subscriptions: i32, events: i32, count: i32, nevents: i32));
    wasi!(reg, module, proc_raise(signal: i32));
    wasi!(reg, module, sock_accept(fd: i32, flags: i32, accepted: i32));
    wasi!(reg, module, sock_recv(
        fd: i32, iovs: i32, iovs_len: i32, flags: i32, nread: i32, out_flags: i32
    ));
    wasi!(reg, module, sock_send(fd: i32, iovs: i32, iovs_len: i32, flags: i32, nwritten: i32));
    wasi!(reg, module, sock_shutdown(fd: i32, how: i32));

    // No result: it unwinds the guest.
    reg.record(module, "proc_exit", vec![ValType::I32], vec![]);
    reg.linker.func_wrap(
        module,
        "proc_exit",
        |_: Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> { proc_exit(code) },
    )?;
    Ok(())
}

type Wasi<'a, 'b> = &'a mut Caller<'b, HostState>;

/// Writes `0` at `ptr`, then returns `errno` (or FAULT).
fn zero_then(caller: Wasi<'_, '_>, ptr: i32, errno: i32) -> i32 {
    match with_mem(caller, |mem, _| write_u32(mem, ptr, 0)) {
        Ok(Ok(())) => errno,
        _ => FAULT,
    }
}

/// SUCCESS for stdout and stderr, BADF for any other fd.
fn std_only(fd: i32) -> i32 {
    if is_std(fd) { SUCCESS } else { BADF }
}

/// `fd_pwrite`: as `fd_write` (the offset is ignored).
fn fd_pwrite(c: Wasi<'_, '_>, fd: i32, iovs: i32, n: i32, _offset: i64, out: i32) -> i32 {
    fd_write(c, fd, iovs, n, out)
}

/// `fd_read`: NOSYS (no input).
fn fd_read(_: Wasi<'_, '_>, _fd: i32, _iovs: i32, _n: i32, _nread: i32) -> i32 {
    NOSYS
}

/// `fd_pread`: NOSYS.
fn fd_pread(_: Wasi<'_, '_>, _fd: i32, _iovs: i32, _n: i32, _offset: i64, _nread: i32) -> i32 {
    NOSYS
}

/// `fd_seek`: SUCCESS (cpp-host).
fn fd_seek(_: Wasi<'_, '_>, _fd: i32, _offset: i64, _whence: i32, _out: i32) -> i32 {
    SUCCESS
}

/// `fd_close`: SUCCESS.
fn fd_close(_: Wasi<'_, '_>, _fd: i32) -> i32 {
    SUCCESS
}

/// `fd_fdstat_get`: stdout and stderr are character devices with
/// `fd_write` rights; other fds → BADF.
fn fd_fdstat_get(c: Wasi<'_, '_>, fd: i32, out: i32) -> i32 {
    if !is_std(fd) {
        return BADF;
    }
    match with_mem(c, |mem, _| {
        write_u64(mem, out, 0)?;
        write_u64(mem, out + 8, 64)?;
        write_u64(mem, out + 16, 0)
    }) {
        Ok(Ok(())) => SUCCESS,
        _ => FAULT,
    }
}

/// `fd_fdstat_set_flags`: NOSYS.
fn fd_fdstat_set_flags(_: Wasi<'_, '_>, _fd: i32, _flags: i32) -> i32 {
    NOSYS
}

/// `fd_fdstat_set_rights`: SUCCESS for stdout/stderr, else BADF.
fn fd_fdstat_set_rights(_: Wasi<'_, '_>, fd: i32, _base: i64, _inheriting: i64) -> i32 {
    std_only(fd)
}

/// `fd_prestat_get`: BADF (no preopens).
fn fd_prestat_get(_: Wasi<'_, '_>, _fd: i32, _out: i32) -> i32 {
    BADF
}

/// `fd_prestat_dir_name`: NOSYS.
fn fd_prestat_dir_name(_: Wasi<'_, '_>, _fd: i32, _path: i32, _len: i32) -> i32 {
    NOSYS
}

/// `fd_filestat_get`: BADF.
fn fd_filestat_get(_: Wasi<'_, '_>, _fd: i32, _out: i32) -> i32 {
    BADF
}

/// `fd_filestat_set_size`: SUCCESS for stdout/stderr, else BADF.
fn fd_filestat_set_size(_: Wasi<'_, '_>, fd: i32, _size: i64) -> i32 {
    std_only(fd)
}

/// `fd_filestat_set_times`: SUCCESS for stdout/stderr, else BADF.
fn fd_filestat_set_times(_: Wasi<'_, '_>, fd: i32, _atim: i64, _mtim: i64, _flags: i32) -> i32 {
    std_only(fd)
}

/// `fd_advise`: SUCCESS.
fn fd_advise(_: Wasi<'_, '_>, _fd: i32, _offset: i64, _len: i64, _advice: i32) -> i32 {
    SUCCESS
}

/// `fd_allocate`: SUCCESS for stdout/stderr, else BADF.
fn fd_allocate(_: Wasi<'_, '_>, fd: i32, _offset: i64, _len: i64) -> i32 {
    std_only(fd)
}

/// `fd_datasync`: SUCCESS for stdout/stderr, else BADF.
fn fd_datasync(_: Wasi<'_, '_>, fd: i32) -> i32 {
    std_only(fd)
}

/// `fd_sync`: SUCCESS for stdout/stderr, else BADF.
fn fd_sync(_: Wasi<'_, '_>, fd: i32) -> i32 {
    std_only(fd)
}

/// `fd_tell`: offset 0 for stdout/stderr, else BADF.
fn fd_tell(c: Wasi<'_, '_>, fd: i32, out: i32) -> i32 {
    if !is_std(fd) {
        return BADF;
    }
    match with_mem(c, |mem, _| write_u64(mem, out, 0)) {
        Ok(Ok(())) => SUCCESS,
        _ => FAULT,
    }
}

/// `fd_readdir`: 0 bytes used, NOTDIR.
fn fd_readdir(c: Wasi<'_, '_>, _fd: i32, _buf: i32, _len: i32, _cookie: i64, used: i32) -> i32 {
    zero_then(c, used, NOTDIR)
}

/// `fd_renumber`: BADF.
fn fd_renumber(_: Wasi<'_, '_>, _fd: i32, _to: i32) -> i32 {
    BADF
}

/// `path_open`: NOENT (no filesystem).
#[allow(clippy::too_many_arguments, reason = "the WASI signature")]
fn path_open(
    _: Wasi<'_, '_>,
    _fd: i32,
    _dirflags: i32,
    _path: i32,
    _path_len: i32,
    _oflags: i32,
    _rights_base: i64,
    _rights_inheriting: i64,
    _fdflags: i32,
    _opened: i32,
) -> i32 {
    NOENT
}

/// `path_filestat_get`: NOTSUP.
fn path_filestat_get(_: Wasi<'_, '_>, _fd: i32, _f: i32, _p: i32, _l: i32, _out: i32) -> i32 {
    NOTSUP
}

/// `path_filestat_set_times`: NOTSUP.
#[allow(clippy::too_many_arguments, reason = "the WASI signature")]
fn path_filestat_set_times(
    _: Wasi<'_, '_>,
    _fd: i32,
    _flags: i32,
    _path: i32,
    _path_len: i32,
    _atim: i64,
    _mtim: i64,
    _fst_flags: i32,
) -> i32 {
    NOTSUP
}

/// `path_create_directory`: NOTSUP.
fn path_create_directory(_: Wasi<'_, '_>, _fd: i32, _path: i32, _len: i32) -> i32 {
    NOTSUP
}

/// `path_remove_directory`: NOTSUP.
fn path_remove_directory(_: Wasi<'_, '_>, _fd: i32, _path: i32, _len: i32) -> i32 {
    NOTSUP
}

/// `path_unlink_file`: NOTSUP.
fn path_unlink_file(_: Wasi<'_, '_>, _fd: i32, _path: i32, _len: i32) -> i32 {
    NOTSUP
}

/// `path_link`: NOTSUP.
#[allow(clippy::too_many_arguments, reason = "the WASI signature")]
fn path_link(
    _: Wasi<'_, '_>,
    _old_fd: i32,
    _old_flags: i32,
    _old_path: i32,
    _old_path_len: i32,
    _new_fd: i32,
    _new_path: i32,
    _new_path_len: i32,
) -> i32 {
    NOTSUP
}

/// `path_rename`: NOTSUP.
fn path_rename(
    _: Wasi<'_, '_>,
    _fd: i32,
    _old_path: i32,
    _old_path_len: i32,
    _new_fd: i32,
    _new_path: i32,
    _new_path_len: i32,
) -> i32 {
    NOTSUP
}

/// `path_symlink`: NOTSUP.
fn path_symlink(
    _: Wasi<'_, '_>,
    _old_path: i32,
    _old_path_len: i32,
    _fd: i32,
    _new_path: i32,
    _new_path_len: i32,
) -> i32 {
    NOTSUP
}

/// `path_readlink`: 0 bytes used, NOTSUP.
fn path_readlink(
    c: Wasi<'_, '_>,
    _fd: i32,
    _path: i32,
    _path_len: i32,
    _buf: i32,
    _buf_len: i32,
    used: i32,
) -> i32 {
    zero_then(c, used, NOTSUP)
}

/// `environ_sizes_get`: the configured variables' count and bytes.
fn environ_sizes_get(c: Wasi<'_, '_>, count: i32, size: i32) -> i32 {
    match with_mem(c, |mem, state| {
        let env = &state.plugin.config.environment;
        let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        write_u32(mem, count, env.len() as u32)?;
        write_u32(mem, size, bytes as u32)
    }) {
        Ok(Ok(())) => SUCCESS,
        _ => FAULT,
    }
}

/// `environ_get`: the configured variables as `KEY=VALUE\0` strings.
fn environ_get(c: Wasi<'_, '_>, array: i32, buf: i32) -> i32 {
    match with_mem(c, |mem, state| {
        let mut at = u(buf);
        for (i, (k, v)) in state.plugin.config.environment.iter().enumerate() {
            write_u32(mem, array.wrapping_add((i * 4) as i32), at)?;
            let len = k.len() + v.len() + 2;
            let r = range(mem.len(), at as i32, len as i32)?;
            let dst = &mut mem[r];
            dst[..k.len()].copy_from_slice(k.as_bytes());
            dst[k.len()] = b'=';
            dst[k.len() + 1..len - 1].copy_from_slice(v.as_bytes());
            dst[len - 1] = 0;
            at = at.wrapping_add(len as u32);
        }
        Ok::<(), vessel_abi::Status>(())
    }) {
        Ok(Ok(())) => SUCCESS,
        _ => FAULT,
    }
}

/// `args_sizes_get`: no arguments.
fn args_sizes_get(c: Wasi<'_, '_>, count: i32, size: i32) -> i32 {
    match with_mem(c, |mem, _| {
        write_u32(mem, count, 0)?;
        write_u32(mem, size, 0)
    }) {
        Ok(Ok(())) => SUCCESS,
        _ => FAULT,
    }
}

/// `args_get`: SUCCESS (nothing to write).
fn args_get(_: Wasi<'_, '_>, _argv: i32, _buf: i32) -> i32 {
    SUCCESS
}

/// `clock_time_get`: REALTIME and MONOTONIC from the embedder's clock;
/// other clocks → NOTSUP.
fn clock_time_get(c: Wasi<'_, '_>, id: i32, _precision: i64, out: i32) -> i32 {
    let clock = &c.data().env.inner.clock;
    let now = match id {
        0 => clock.wall_nanos(),
        1 => clock.monotonic_nanos(),
        _ => return NOTSUP,
    };
    match with_mem(c, |mem, _| write_u64(mem, out, now)) {
        Ok(Ok(())) => SUCCESS,
        _ => FAULT,
    }
}

/// `clock_res_get`: 1 ns for REALTIME and MONOTONIC; others → NOTSUP.
fn clock_res_get(c: Wasi<'_, '_>, id: i32, out: i32) -> i32 {
    if id != 0 && id != 1 {
        return NOTSUP;
    }
    match with_mem(c, |mem, _| write_u64(mem, out, 1)) {
        Ok(Ok(())) => SUCCESS,
        _ => FAULT,
    }
}

/// `random_get`: at most [`MAX_RANDOM_BYTES`] from the embedder's source
/// (INVAL above).
fn random_get(c: Wasi<'_, '_>, buf: i32, len: i32) -> i32 {
    if u(len) > MAX_RANDOM_BYTES {
        return INVAL;
    }
    if len == 0 {
        return SUCCESS;
    }
    match with_mem(c, |mem, state| {
        let r = range(mem.len(), buf, len)?;
        state.env.inner.random.fill(&mut mem[r])
    }) {
        Ok(Ok(())) => SUCCESS,
        _ => FAULT,
    }
}

/// `sched_yield`: SUCCESS.
fn sched_yield(_: Wasi<'_, '_>) -> i32 {
    SUCCESS
}

/// `poll_oneoff`: returns at once with 0 events and SUCCESS (Go's runtime
/// needs success; it must never block a worker).
fn poll_oneoff(c: Wasi<'_, '_>, _in: i32, _out: i32, _n: i32, nevents: i32) -> i32 {
    zero_then(c, nevents, SUCCESS)
}

/// `proc_raise`: NOTSUP.
fn proc_raise(_: Wasi<'_, '_>, _signal: i32) -> i32 {
    NOTSUP
}

/// `proc_exit`: stops the guest with [`ProcExit`].
fn proc_exit(code: i32) -> wasmtime::Result<()> {
    Err(wasmtime::Error::new(ProcExit(code)))
}

/// `sock_accept`: NOTSUP.
fn sock_accept(c: Wasi<'_, '_>, _fd: i32, _flags: i32, out: i32) -> i32 {
    zero_then(c, out, NOTSUP)
}

/// `sock_recv`: 0 bytes, no flags, NOTSUP.
fn sock_recv(
    c: Wasi<'_, '_>,
    _fd: i32,
    _iovs: i32,
    _iovs_len: i32,
    _flags: i32,
    out_len: i32,
    out_flags: i32,
) -> i32 {
    let _ = zero_then(c, out_flags, NOTSUP);
    zero_then(c, out_len, NOTSUP)
}

/// `sock_send`: 0 bytes, NOTSUP.
fn sock_send(c: Wasi<'_, '_>, _fd: i32, _iovs: i32, _len: i32, _flags: i32, out: i32) -> i32 {
    zero_then(c, out, NOTSUP)
}

/// `sock_shutdown`: NOTSUP.
fn sock_shutdown(_: Wasi<'_, '_>, _fd: i32, _how: i32) -> i32 {
    NOTSUP
}
