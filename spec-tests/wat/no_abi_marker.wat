;; no_abi_marker.wat — a valid proxy-wasm module that exports NO
;; proxy_abi_version_* function.
;;
;; What it does
;;   Everything else is a normal 0.2.x module: memory, allocator, callbacks.
;;   If a host runs it anyway, proxy_on_vm_start logs "no_abi_marker: on_vm_start"
;;   and proxy_on_request_headers logs "no_abi_marker: on_request_headers".
;;
;; What the host is expected to do
;;   Refuse to load it: cpp-host fails with "Missing or unknown Proxy-Wasm ABI
;;   version" (ABI reference §1.1). No callback may run.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))

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

  (data (i32.const 0x1000) "no_abi_marker: \00")            ;; slot 0: prefix
  (data (i32.const 0x1040) "=\00")
  (data (i32.const 0x1080) "on_vm_start\00")
  (data (i32.const 0x10C0) "on_request_headers\00")

  ;; Deliberately no (func (export "proxy_abi_version_...")).
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $say (i32.const 0x1080))
    (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $say (i32.const 0x10C0))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
)
