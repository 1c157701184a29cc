;; go_like_wasi.wat — imports the broad WASI surface a Go 1.24 (wasip1) or
;; TinyGo module imports, plus one `wasi_unstable` import, to show such
;; modules load and start.
;;
;; What it does
;;   Marker proxy_abi_version_0_2_0 (what the Go SDKs export). Imports from
;;   wasi_snapshot_preview1, with their preview1 signatures: poll_oneoff,
;;   proc_exit, fd_write, fd_read, fd_close, fd_seek, fd_fdstat_get,
;;   fd_prestat_get, path_open, environ_get, environ_sizes_get, args_get,
;;   args_sizes_get, clock_time_get, random_get, sched_yield; and
;;   wasi_unstable.fd_write.
;;   `_initialize` (a WASI reactor start function):
;;     1. poll_oneoff with one relative clock subscription (monotonic, 1 µs),
;;        as Go's runtime does when it sleeps;
;;     2. fd_write(1, "hello from wasi\n");
;;     3. clock_time_get(realtime), random_get(8 bytes), environ_sizes_get +
;;        environ_get, args_sizes_get + args_get, fd_fdstat_get(1),
;;        fd_prestat_get(3), sched_yield, and fd_read / fd_seek / fd_close /
;;        path_open on fd 99 / 3, none of which exist;
;;     4. fd_write(1) one line with every errno:
;;        "go_like_wasi: errno poll_oneoff=E fd_write=E clock_time_get=E
;;         random_get=E environ_sizes_get=E environ_get=E args_sizes_get=E
;;         args_get=E fd_fdstat_get=E fd_prestat_get=E sched_yield=E
;;         fd_read=E fd_seek=E fd_close=E path_open=E\n"   (one line).
;;   proxy_on_configure: if the plugin configuration is exactly "proc_exit",
;;     logs "go_like_wasi: calling proc_exit(3)", calls proc_exit(3), and if
;;     that returns logs "go_like_wasi: proc_exit returned". Returns 1.
;;   proxy_on_request_headers writes
;;     "go_like_wasi: request via wasi_unstable\n" with wasi_unstable.fd_write
;;     and returns 0.
;;
;; What the host is expected to do (ABI reference §7, §11.19, §11.23-24)
;;   Instantiate it (every import resolves, under both WASI module names) and
;;   run _initialize. stdout lines reach the log at INFO with the trailing
;;   newline stripped: "hello from wasi", the errno line, and per request
;;   "go_like_wasi: request via wasi_unstable".
;;   Errnos: poll_oneoff=0 (MUST succeed: Go throws otherwise), fd_write=0,
;;   clock_time_get=0, random_get=0, environ_sizes_get=0, environ_get=0,
;;   args_sizes_get=0, args_get=0, fd_fdstat_get=0, sched_yield=0;
;;   fd_prestat_get=8 (BADF: no preopens); fd_read, fd_seek, fd_close and
;;   path_open non-zero for cpp-host except where it returns 0 for
;;   fd_seek/fd_close (it only logs); wasmtime-wasi returns 8 (BADF).
;;   proc_exit: cpp-host logs and returns (so "proc_exit returned" is
;;   logged); vessel's documented choice is to fail the VM instead (the
;;   configure step then fails) — never to exit the process.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes"
    (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek"
    (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get"
    (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
  (import "wasi_unstable" "fd_write"
    (func $unstable_fd_write (param i32 i32 i32 i32) (result i32)))

  ;; ------------------------------------------------------------------
  ;; Common prelude (same in every logging WAT module of this folder).
  ;; Memory layout:
  ;;   0x0000-0x00FF  hostcall out-parameters (0x10 ret ptr, 0x14 ret size,
  ;;                  0x18 u32/u64 out, 0x20 iovecs)
  ;;   0x0100-0x08FF  line buffer for log messages
  ;;   0x0900-0x09FF  digit scratch
  ;;   0x1000-0x7FFF  NUL-terminated strings, one per 64-byte slot
  ;;   0x8000-0xFFFF  binary constants (serialized maps)
  ;;   0x10000-       bump heap of the allocator (grows memory on demand)
  ;; ------------------------------------------------------------------
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 0x10000))
  (global $len (mut i32) (i32.const 0))

  ;; Bump allocator: 8-byte aligned, never frees, 0 on failure.
  (func $alloc (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (if (i32.gt_u (local.get $size) (i32.const 0x10000000))
      (then (return (i32.const 0))))
    (local.set $p (global.get $heap))
    (local.set $end
      (i32.and (i32.add (i32.add (local.get $p) (local.get $size)) (i32.const 7))
               (i32.const -8)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                    (i32.const 0xFFFF))
                           (i32.const 16)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))
  (export "proxy_on_memory_allocate" (func $alloc))
  (export "malloc" (func $alloc))

  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))
  ;; Appends $n bytes at $p to the line buffer (truncated at 0x700 bytes).
  (func $put (param $p i32) (param $n i32)
    (if (i32.gt_u (i32.add (global.get $len) (local.get $n)) (i32.const 0x700))
      (then (local.set $n (i32.sub (i32.const 0x700) (global.get $len)))))
    (memory.copy (i32.add (i32.const 0x100) (global.get $len)) (local.get $p) (local.get $n))
    (global.set $len (i32.add (global.get $len) (local.get $n))))
  (func $puts (param $p i32) (call $put (local.get $p) (call $strlen (local.get $p))))
  ;; Appends $v as unsigned decimal.
  (func $putu (param $v i32)
    (local $i i32)
    (local.set $i (i32.const 0x0A00))
    (loop $digit
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (local.get $i)
        (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digit (local.get $v)))
    (call $put (local.get $i) (i32.sub (i32.const 0x0A00) (local.get $i))))
  ;; Logs the line buffer at $level and clears it.
  (func $flush (param $level i32)
    (drop (call $proxy_log (local.get $level) (i32.const 0x100) (global.get $len)))
    (global.set $len (i32.const 0)))
  ;; Logs "<prefix (slot 0)><name>=<status>" at INFO.
  (func $report (param $name i32) (param $status i32)
    (call $puts (i32.const 0x1000))
    (call $puts (local.get $name))
    (call $puts (i32.const 0x1040))
    (call $putu (local.get $status))
    (call $flush (i32.const 2)))
  ;; Logs "<prefix (slot 0)><text>" at INFO.
  (func $say (param $text i32)
    (call $puts (i32.const 0x1000))
    (call $puts (local.get $text))
    (call $flush (i32.const 2)))
  ;; ---------------------------- end of prelude ----------------------

  (data (i32.const 0x1000) "go_like_wasi: \00")             ;; slot 0: prefix
  (data (i32.const 0x1040) "=\00")
  (data (i32.const 0x1080) "hello from wasi\0a\00")
  (data (i32.const 0x10C0) "errno\00")
  (data (i32.const 0x1100) "calling proc_exit(3)\00")
  (data (i32.const 0x1140) "proc_exit returned\00")
  (data (i32.const 0x1180) "proc_exit\00")
  (data (i32.const 0x11C0) "request via wasi_unstable\0a\00")
  (data (i32.const 0x1200) "x\00")
  (data (i32.const 0x1240) "\0a\00")
  ;; " <name>=" labels for the errno line.
  (data (i32.const 0x2000) " poll_oneoff=\00")
  (data (i32.const 0x2040) " fd_write=\00")
  (data (i32.const 0x2080) " clock_time_get=\00")
  (data (i32.const 0x20C0) " random_get=\00")
  (data (i32.const 0x2100) " environ_sizes_get=\00")
  (data (i32.const 0x2140) " environ_get=\00")
  (data (i32.const 0x2180) " args_sizes_get=\00")
  (data (i32.const 0x21C0) " args_get=\00")
  (data (i32.const 0x2200) " fd_fdstat_get=\00")
  (data (i32.const 0x2240) " fd_prestat_get=\00")
  (data (i32.const 0x2280) " sched_yield=\00")
  (data (i32.const 0x22C0) " fd_read=\00")
  (data (i32.const 0x2300) " fd_seek=\00")
  (data (i32.const 0x2340) " fd_close=\00")
  (data (i32.const 0x2380) " path_open=\00")

  ;; 1 if the $n bytes at $p equal the C string at $c.
  (func $streq (param $p i32) (param $n i32) (param $c i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $n) (call $strlen (local.get $c)))
      (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $c) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; Writes the C string at $s to fd 1 through wasi_snapshot_preview1; returns the errno.
  (func $print (param $s i32) (result i32)
    (i32.store (i32.const 0x20) (local.get $s))
    (i32.store (i32.const 0x24) (call $strlen (local.get $s)))
    (call $fd_write (i32.const 1) (i32.const 0x20) (i32.const 1) (i32.const 0x2C)))

  ;; Appends " <label>=<errno>" to the line buffer.
  (func $errno (param $label i32) (param $e i32)
    (call $puts (local.get $label))
    (call $putu (local.get $e)))

  (func (export "_initialize")
    (local $e_poll i32) (local $e_write i32) (local $e_clock i32) (local $e_random i32)
    (local $e_envsz i32) (local $e_env i32) (local $e_argsz i32) (local $e_args i32)
    (local $e_fdstat i32) (local $e_prestat i32) (local $e_yield i32) (local $e_read i32)
    (local $e_seek i32) (local $e_close i32) (local $e_open i32)
    ;; 1. poll_oneoff: one subscription at 0xA00 (48 bytes), one event at 0xA40.
    (i64.store (i32.const 0xA00) (i64.const 1))        ;; userdata
    (i32.store8 (i32.const 0xA08) (i32.const 0))       ;; tag = clock
    (i32.store (i32.const 0xA10) (i32.const 1))        ;; clock id = monotonic
    (i64.store (i32.const 0xA18) (i64.const 1000))     ;; timeout = 1 µs (relative)
    (i64.store (i32.const 0xA20) (i64.const 0))        ;; precision
    (i32.store16 (i32.const 0xA28) (i32.const 0))      ;; flags = relative
    (local.set $e_poll
      (call $poll_oneoff (i32.const 0xA00) (i32.const 0xA40) (i32.const 1) (i32.const 0xA60)))
    ;; 2. hello
    (local.set $e_write (call $print (i32.const 0x1080)))
    ;; 3. the rest
    (local.set $e_clock (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 0xA68)))
    (local.set $e_random (call $random_get (i32.const 0xA70) (i32.const 8)))
    (local.set $e_envsz (call $environ_sizes_get (i32.const 0xA80) (i32.const 0xA84)))
    (local.set $e_env
      (call $environ_get
        (call $alloc (i32.add (i32.shl (i32.load (i32.const 0xA80)) (i32.const 2)) (i32.const 4)))
        (call $alloc (i32.add (i32.load (i32.const 0xA84)) (i32.const 1)))))
    (local.set $e_argsz (call $args_sizes_get (i32.const 0xA88) (i32.const 0xA8C)))
    (local.set $e_args
      (call $args_get
        (call $alloc (i32.add (i32.shl (i32.load (i32.const 0xA88)) (i32.const 2)) (i32.const 4)))
        (call $alloc (i32.add (i32.load (i32.const 0xA8C)) (i32.const 1)))))
    (local.set $e_fdstat (call $fd_fdstat_get (i32.const 1) (i32.const 0xAA0)))
    (local.set $e_prestat (call $fd_prestat_get (i32.const 3) (i32.const 0xAC0)))
    (local.set $e_yield (call $sched_yield))
    (i32.store (i32.const 0x30) (i32.const 0xB00))
    (i32.store (i32.const 0x34) (i32.const 16))
    (local.set $e_read (call $fd_read (i32.const 99) (i32.const 0x30) (i32.const 1) (i32.const 0xAE0)))
    (local.set $e_seek (call $fd_seek (i32.const 99) (i64.const 0) (i32.const 0) (i32.const 0xAE8)))
    (local.set $e_close (call $fd_close (i32.const 99)))
    (local.set $e_open
      (call $path_open (i32.const 3) (i32.const 0) (i32.const 0x1200) (i32.const 1) (i32.const 0)
        (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0xAF0)))
    ;; 4. one line with every errno, written to stdout in one fd_write.
    (call $puts (i32.const 0x1000))
    (call $puts (i32.const 0x10C0))
    (call $errno (i32.const 0x2000) (local.get $e_poll))
    (call $errno (i32.const 0x2040) (local.get $e_write))
    (call $errno (i32.const 0x2080) (local.get $e_clock))
    (call $errno (i32.const 0x20C0) (local.get $e_random))
    (call $errno (i32.const 0x2100) (local.get $e_envsz))
    (call $errno (i32.const 0x2140) (local.get $e_env))
    (call $errno (i32.const 0x2180) (local.get $e_argsz))
    (call $errno (i32.const 0x21C0) (local.get $e_args))
    (call $errno (i32.const 0x2200) (local.get $e_fdstat))
    (call $errno (i32.const 0x2240) (local.get $e_prestat))
    (call $errno (i32.const 0x2280) (local.get $e_yield))
    (call $errno (i32.const 0x22C0) (local.get $e_read))
    (call $errno (i32.const 0x2300) (local.get $e_seek))
    (call $errno (i32.const 0x2340) (local.get $e_close))
    (call $errno (i32.const 0x2380) (local.get $e_open))
    (call $puts (i32.const 0x1240))
    (i32.store (i32.const 0x20) (i32.const 0x100))
    (i32.store (i32.const 0x24) (global.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0x20) (i32.const 1) (i32.const 0x2C)))
    (global.set $len (i32.const 0)))

  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (i32.eqz
          (call $get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 0xFFFFFFFF)
            (i32.const 0x10) (i32.const 0x14)))
      (then
        (if (call $streq (i32.load (i32.const 0x10)) (i32.load (i32.const 0x14)) (i32.const 0x1180))
          (then
            (call $say (i32.const 0x1100))
            (call $proc_exit (i32.const 3))
            (call $say (i32.const 0x1140))))))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $puts (i32.const 0x1000))
    (call $puts (i32.const 0x11C0))
    (i32.store (i32.const 0x20) (i32.const 0x100))
    (i32.store (i32.const 0x24) (global.get $len))
    (drop (call $unstable_fd_write (i32.const 1) (i32.const 0x20) (i32.const 1) (i32.const 0x2C)))
    (global.set $len (i32.const 0))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
)
