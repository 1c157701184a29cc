;; startup_order.wat — logs every start-up and shutdown step, so a test can
;; check the order the host calls them in, and refuses to start when asked.
;;
;; What it does
;;   _initialize logs "startup_order: _initialize" and sets a flag.
;;   main(argc, argv) logs
;;       startup_order: main argc=<argc> argv=<argv> initialized=<flag>
;;   and returns 0.
;;   proxy_on_context_create(ctx, parent) logs
;;       startup_order: context_create ctx=<ctx> parent=<parent>
;;   proxy_on_vm_start(root, size) logs
;;       startup_order: vm_start root=<root> size=<size>
;;   and returns 0 (refuse) if the VM configuration (buffer 6) is exactly
;;   "refuse_vm_start", else 1.
;;   proxy_on_configure(root, size) logs
;;       startup_order: configure root=<root> size=<size>
;;   and returns 0 (refuse) if the plugin configuration (buffer 7) is
;;   exactly "refuse_configure", else 1.
;;   proxy_on_request_headers(ctx, n, eos) logs
;;       startup_order: request_headers ctx=<ctx>
;;   and returns 0. proxy_on_log, proxy_on_done (returns 1) and
;;   proxy_on_delete log "startup_order: log ctx=<ctx>", "... done ctx=<ctx>",
;;   "... delete ctx=<ctx>".
;;
;; What the host is expected to do (ABI reference §3, §6.3, §11.11)
;;   Start-up, in this order: _initialize; main argc=0 argv=0 initialized=1;
;;   context_create ctx=<root> parent=0; vm_start root=<root>
;;   size=<VM configuration length>; configure root=<root> size=<plugin
;;   configuration length>. "refuse_vm_start": start fails right after
;;   vm_start (configure never runs). "refuse_configure": start fails after
;;   configure. A finished HTTP stream: log, done, delete (Envoy's order).
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes"
    (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))

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

  (data (i32.const 0x1000) "startup_order: \00")            ;; slot 0: prefix
  (data (i32.const 0x1040) "=\00")
  (data (i32.const 0x1080) "_initialize\00")
  (data (i32.const 0x10C0) "main argc=\00")
  (data (i32.const 0x1100) " argv=\00")
  (data (i32.const 0x1140) " initialized=\00")
  (data (i32.const 0x1180) "context_create ctx=\00")
  (data (i32.const 0x11C0) " parent=\00")
  (data (i32.const 0x1200) "vm_start root=\00")
  (data (i32.const 0x1240) " size=\00")
  (data (i32.const 0x1280) "configure root=\00")
  (data (i32.const 0x12C0) "request_headers ctx=\00")
  (data (i32.const 0x1300) "log ctx=\00")
  (data (i32.const 0x1340) "done ctx=\00")
  (data (i32.const 0x1380) "delete ctx=\00")
  (data (i32.const 0x13C0) "refuse_vm_start\00")
  (data (i32.const 0x1400) "refuse_configure\00")

  (global $initialized (mut i32) (i32.const 0))

  ;; 1 if the $n bytes at $p equal the NUL-terminated string at $c.
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

  ;; 1 if buffer $type currently equals the string at $c.
  (func $buffer_is (param $type i32) (param $c i32) (result i32)
    (i32.store (i32.const 0x10) (i32.const 0))
    (i32.store (i32.const 0x14) (i32.const 0))
    (if (call $get_buffer_bytes (local.get $type) (i32.const 0) (i32.const -1)
          (i32.const 0x10) (i32.const 0x14))
      (then (return (i32.const 0))))
    (call $streq (i32.load (i32.const 0x10)) (i32.load (i32.const 0x14)) (local.get $c)))

  ;; Logs "<prefix><text><v>".
  (func $say_u (param $text i32) (param $v i32)
    (call $puts (i32.const 0x1000))
    (call $puts (local.get $text))
    (call $putu (local.get $v))
    (call $flush (i32.const 2)))
  ;; Logs "<prefix><t1><v1><t2><v2>".
  (func $say_uu (param $t1 i32) (param $v1 i32) (param $t2 i32) (param $v2 i32)
    (call $puts (i32.const 0x1000))
    (call $puts (local.get $t1))
    (call $putu (local.get $v1))
    (call $puts (local.get $t2))
    (call $putu (local.get $v2))
    (call $flush (i32.const 2)))

  (func (export "proxy_abi_version_0_2_1"))

  (func (export "_initialize")
    (call $say (i32.const 0x1080))
    (global.set $initialized (i32.const 1)))

  (func (export "main") (param $argc i32) (param $argv i32) (result i32)
    (call $puts (i32.const 0x1000))
    (call $puts (i32.const 0x10C0))
    (call $putu (local.get $argc))
    (call $puts (i32.const 0x1100))
    (call $putu (local.get $argv))
    (call $puts (i32.const 0x1140))
    (call $putu (global.get $initialized))
    (call $flush (i32.const 2))
    (i32.const 0))

  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32)
    (call $say_uu (i32.const 0x1180) (local.get $ctx) (i32.const 0x11C0) (local.get $parent)))

  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32)
    (call $say_uu (i32.const 0x1200) (local.get $root) (i32.const 0x1240) (local.get $size))
    (i32.eqz (call $buffer_is (i32.const 6) (i32.const 0x13C0))))

  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (call $say_uu (i32.const 0x1280) (local.get $root) (i32.const 0x1240) (local.get $size))
    (i32.eqz (call $buffer_is (i32.const 7) (i32.const 0x1400))))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (call $say_u (i32.const 0x12C0) (local.get $ctx))
    (i32.const 0))

  (func (export "proxy_on_log") (param $ctx i32)
    (call $say_u (i32.const 0x1300) (local.get $ctx)))
  (func (export "proxy_on_done") (param $ctx i32) (result i32)
    (call $say_u (i32.const 0x1340) (local.get $ctx))
    (i32.const 1))
  (func (export "proxy_on_delete") (param $ctx i32)
    (call $say_u (i32.const 0x1380) (local.get $ctx)))
)
