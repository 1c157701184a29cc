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

macro_rules! wasi {
    ($reg:expr, $module:expr, $name:literal, |$caller:ident $(, $arg:ident : $ty:ty)*| $body:expr) => {{
        $reg.record(
            $module,
            $name,
            vec![$(<$ty as crate::hostcalls::AbiTy>::TY),*],
            vec![ValType::I32],
        );
        #[allow(unused_mut, unused_variables)]
        $reg.linker.func_wrap(
            $module,
            $name,
            |mut $caller: Caller<'_, HostState> $(, $arg: $ty)*| -> i32 { $body },
        )?;
    }};
}

fn is_std(fd: i32) -> bool {
    fd == 1 || fd == 2
}

/// Writes zeros to a u32 out-parameter, returning `errno` (or FAULT).
fn zero_then(caller: &mut Caller<'_, HostState>, ptr: i32, errno: i32) -> i32 {
    match with_mem(caller, |mem, _| write_u32(mem, ptr, 0)) {
        Ok(Ok(())) => errno,
        _ => errno::FAULT,
    }
}

fn fd_write(
    caller: &mut Caller<'_, HostState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> i32 {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return errno::BADF,
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
        let ctx = state.current;
        emit(state, level, ctx, msg);
        write_u32(mem, nwritten, u32::try_from(total).unwrap_or(u32::MAX)).map_err(|_| ())
    });
    match r {
        Ok(Ok(())) => errno::SUCCESS,
        _ => errno::FAULT,
    }
}

/// Adds every WASI function under `module`.
pub(crate) fn add_to_linker(reg: &mut Registry, module: &'static str) -> wasmtime::Result<()> {
    use errno::*;
    wasi!(
        reg,
        module,
        "fd_write",
        |c, fd: i32, iovs: i32, n: i32, out: i32| fd_write(&mut c, fd, iovs, n, out)
    );
    wasi!(
        reg,
        module,
        "fd_pwrite",
        |c, fd: i32, iovs: i32, n: i32, _off: i64, out: i32| fd_write(&mut c, fd, iovs, n, out)
    );
    wasi!(
        reg,
        module,
        "fd_read",
        |c, _fd: i32, _a: i32, _b: i32, _x: i32| NOSYS
    );
    wasi!(
        reg,
        module,
        "fd_pread",
        |c, _fd: i32, _a: i32, _b: i32, _o: i64, _x: i32| NOSYS
    );
    wasi!(
        reg,
        module,
        "fd_seek",
        |c, _fd: i32, _o: i64, _w: i32, _out: i32| SUCCESS
    );
    wasi!(reg, module, "fd_close", |c, _fd: i32| SUCCESS);
    wasi!(reg, module, "fd_fdstat_get", |c, fd: i32, out: i32| {
        if !is_std(fd) {
            return BADF;
        }
        match with_mem(&mut c, |mem, _| {
            write_u64(mem, out, 0)?;
            write_u64(mem, out + 8, 64)?;
            write_u64(mem, out + 16, 0)
        }) {
            Ok(Ok(())) => SUCCESS,
            _ => FAULT,
        }
    });
    wasi!(
        reg,
        module,
        "fd_fdstat_set_flags",
        |c, _fd: i32, _f: i32| NOSYS
    );
    wasi!(
        reg,
        module,
        "fd_fdstat_set_rights",
        |c, fd: i32, _a: i64, _b: i64| if is_std(fd) { SUCCESS } else { BADF }
    );
    wasi!(reg, module, "fd_prestat_get", |c, _fd: i32, _out: i32| BADF);
    wasi!(
        reg,
        module,
        "fd_prestat_dir_name",
        |c, _fd: i32, _p: i32, _l: i32| NOSYS
    );
    wasi!(reg, module, "fd_filestat_get", |c, _fd: i32, _out: i32| {
        BADF
    });
    wasi!(
        reg,
        module,
        "fd_filestat_set_size",
        |c, fd: i32, _s: i64| if is_std(fd) { SUCCESS } else { BADF }
    );
    wasi!(
        reg,
        module,
        "fd_filestat_set_times",
        |c, fd: i32, _a: i64, _m: i64, _f: i32| if is_std(fd) { SUCCESS } else { BADF }
    );
    wasi!(
        reg,
        module,
        "fd_advise",
        |c, _fd: i32, _o: i64, _l: i64, _a: i32| SUCCESS
    );
    wasi!(
        reg,
        module,
        "fd_allocate",
        |c, fd: i32, _o: i64, _l: i64| if is_std(fd) { SUCCESS } else { BADF }
    );
    wasi!(reg, module, "fd_datasync", |c, fd: i32| if is_std(fd) {
        SUCCESS
    } else {
        BADF
    });
    wasi!(reg, module, "fd_sync", |c, fd: i32| if is_std(fd) {
        SUCCESS
    } else {
        BADF
    });
    wasi!(reg, module, "fd_tell", |c, fd: i32, out: i32| {
        if !is_std(fd) {
            return BADF;
        }
        match with_mem(&mut c, |mem, _| write_u64(mem, out, 0)) {
            Ok(Ok(())) => SUCCESS,
            _ => FAULT,
        }
    });
    wasi!(
        reg,
        module,
        "fd_readdir",
        |c, _fd: i32, _b: i32, _l: i32, _k: i64, used: i32| zero_then(&mut c, used, NOTDIR)
    );
    wasi!(reg, module, "fd_renumber", |c, _a: i32, _b: i32| BADF);
    wasi!(
        reg,
        module,
        "path_open",
        |c,
         _fd: i32,
         _d: i32,
         _p: i32,
         _l: i32,
         _o: i32,
         _rb: i64,
         _ri: i64,
         _f: i32,
         _out: i32| NOENT
    );
    wasi!(
        reg,
        module,
        "path_filestat_get",
        |c, _fd: i32, _f: i32, _p: i32, _l: i32, _out: i32| NOTSUP
    );
    wasi!(
        reg,
        module,
        "path_filestat_set_times",
        |c, _fd: i32, _f: i32, _p: i32, _l: i32, _a: i64, _m: i64, _ff: i32| NOTSUP
    );
    wasi!(
        reg,
        module,
        "path_create_directory",
        |c, _fd: i32, _p: i32, _l: i32| NOTSUP
    );
    wasi!(
        reg,
        module,
        "path_remove_directory",
        |c, _fd: i32, _p: i32, _l: i32| NOTSUP
    );
    wasi!(
        reg,
        module,
        "path_unlink_file",
        |c, _fd: i32, _p: i32, _l: i32| NOTSUP
    );
    wasi!(
        reg,
        module,
        "path_link",
        |c, _a: i32, _b: i32, _x: i32, _d: i32, _e: i32, _f: i32, _g: i32| NOTSUP
    );
    wasi!(
        reg,
        module,
        "path_rename",
        |c, _a: i32, _b: i32, _x: i32, _d: i32, _e: i32, _f: i32| NOTSUP
    );
    wasi!(
        reg,
        module,
        "path_symlink",
        |c, _a: i32, _b: i32, _x: i32, _d: i32, _e: i32| NOTSUP
    );
    wasi!(
        reg,
        module,
        "path_readlink",
        |c, _fd: i32, _p: i32, _l: i32, _b: i32, _bl: i32, used: i32| zero_then(
            &mut c, used, NOTSUP
        )
    );
    wasi!(
        reg,
        module,
        "environ_sizes_get",
        |c, count: i32, size: i32| {
            match with_mem(&mut c, |mem, state| {
                let env = &state.plugin.config.environment;
                let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
                write_u32(mem, count, env.len() as u32)?;
                write_u32(mem, size, bytes as u32)
            }) {
                Ok(Ok(())) => SUCCESS,
                _ => FAULT,
            }
        }
    );
    wasi!(reg, module, "environ_get", |c, array: i32, buf: i32| {
        match with_mem(&mut c, |mem, state| {
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
    });
    wasi!(reg, module, "args_sizes_get", |c, count: i32, size: i32| {
        match with_mem(&mut c, |mem, _| {
            write_u32(mem, count, 0)?;
            write_u32(mem, size, 0)
        }) {
            Ok(Ok(())) => SUCCESS,
            _ => FAULT,
        }
    });
    wasi!(reg, module, "args_get", |c, _a: i32, _b: i32| SUCCESS);
    wasi!(
        reg,
        module,
        "clock_time_get",
        |c, id: i32, _precision: i64, out: i32| {
            let clock = &c.data().env.inner.clock;
            let now = match id {
                0 => clock.wall_nanos(),
                1 => clock.monotonic_nanos(),
                _ => return NOTSUP,
            };
            match with_mem(&mut c, |mem, _| write_u64(mem, out, now)) {
                Ok(Ok(())) => SUCCESS,
                _ => FAULT,
            }
        }
    );
    wasi!(reg, module, "clock_res_get", |c, id: i32, out: i32| {
        if id != 0 && id != 1 {
            return NOTSUP;
        }
        match with_mem(&mut c, |mem, _| write_u64(mem, out, 1)) {
            Ok(Ok(())) => SUCCESS,
            _ => FAULT,
        }
    });
    wasi!(reg, module, "random_get", |c, buf: i32, len: i32| {
        if u(len) > MAX_RANDOM_BYTES {
            return INVAL;
        }
        if len == 0 {
            return SUCCESS;
        }
        match with_mem(&mut c, |mem, state| {
            let r = range(mem.len(), buf, len)?;
            state.env.inner.random.fill(&mut mem[r])
        }) {
            Ok(Ok(())) => SUCCESS,
            _ => FAULT,
        }
    });
    wasi!(reg, module, "sched_yield", |c| SUCCESS);
    wasi!(
        reg,
        module,
        "poll_oneoff",
        |c, _in: i32, _out: i32, _n: i32, nevents: i32| zero_then(&mut c, nevents, SUCCESS)
    );
    wasi!(reg, module, "proc_raise", |c, _sig: i32| NOTSUP);
    wasi!(
        reg,
        module,
        "sock_accept",
        |c, _fd: i32, _f: i32, out: i32| zero_then(&mut c, out, NOTSUP)
    );
    wasi!(
        reg,
        module,
        "sock_recv",
        |c, _fd: i32, _d: i32, _l: i32, _f: i32, out_len: i32, out_flags: i32| {
            let _ = zero_then(&mut c, out_flags, NOTSUP);
            zero_then(&mut c, out_len, NOTSUP)
        }
    );
    wasi!(
        reg,
        module,
        "sock_send",
        |c, _fd: i32, _d: i32, _l: i32, _f: i32, out: i32| zero_then(&mut c, out, NOTSUP)
    );
    wasi!(reg, module, "sock_shutdown", |c, _fd: i32, _how: i32| {
        NOTSUP
    });

    reg.record(module, "proc_exit", vec![ValType::I32], vec![]);
    reg.linker.func_wrap(
        module,
        "proc_exit",
        |_: Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(ProcExit(code)))
        },
    )?;
    Ok(())
}
