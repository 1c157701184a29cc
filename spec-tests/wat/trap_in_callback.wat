;; trap_in_callback.wat — traps (`unreachable`) in the callback named by the
;; VM configuration; behaves normally (and quietly) everywhere else.
;;
;; What it does
;;   The VM configuration (buffer 6, read with proxy_get_buffer_bytes the
;;   first time any callback runs) is the selector. It must be exactly one of:
;;     on_context_create_root  on_context_create   (stream context)
;;     on_vm_start             on_configure
;;     on_request_headers      on_request_body      on_request_trailers
;;     on_response_headers     on_response_body     on_response_trailers
;;     on_log                  on_done              on_done_root
;;     on_delete               on_delete_root       on_tick
;;     on_queue_ready          on_http_call_response
;;   proxy_on_vm_start logs "trap_in_callback: selector=<code>" (0 = no
;;   match, else the 1-based position in the list above, left to right, top
;;   to bottom). Just before trapping it logs
;;       trap_in_callback: trapping in <name>
;;   at INFO, then executes `unreachable`.
;;   Set-up done only for the selectors that need it:
;;     on_tick:               on_configure sets a 10 ms tick period;
;;     on_queue_ready:        on_vm_start registers queue "trap_queue", and
;;                            on_request_headers enqueues "x" into it;
;;     on_http_call_response: on_request_headers calls cluster "auth"
;;                            (GET / , :authority auth, timeout 1000 ms) and
;;                            returns 1 (Pause) if the call was dispatched.
;;   Every other callback returns 0 (Continue) / 1 (true).
;;
;; What the host is expected to do (ABI reference §6.6, §11)
;;   The trap fails the VM; the host must not crash. on_context_create_root,
;;   on_vm_start, on_configure: the plugin fails to start (Envoy rejects the
;;   configuration). Stream callbacks: the stream follows the failure policy
;;   (FAIL_CLOSED: 503 local reply if nothing was sent yet; FAIL_OPEN: pass
;;   through); later streams on the same VM are failed without calling the
;;   guest. on_log / on_done / on_delete / on_tick / on_queue_ready /
;;   on_http_call_response: the VM is marked failed; later callbacks are not
;;   delivered.
(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes"
    (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds"
    (func $set_tick_period (param i32) (result i32)))
  (import "env" "proxy_register_shared_queue"
    (func $register_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue"
    (func $enqueue_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call"
    (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))

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

  (data (i32.const 0x1000) "trap_in_callback: \00")         ;; slot 0: prefix
  (data (i32.const 0x1040) "=\00")
  (data (i32.const 0x1080) "trapping in \00")
  (data (i32.const 0x10C0) "selector\00")
  (data (i32.const 0x1100) "trap_queue\00")
  (data (i32.const 0x1140) "auth\00")
  (data (i32.const 0x1180) "x\00")

  ;; Callback names: code i lives at 0x2000 + 0x40 * i.
  (data (i32.const 0x2040) "on_context_create_root\00")      ;; 1
  (data (i32.const 0x2080) "on_context_create\00")           ;; 2
  (data (i32.const 0x20C0) "on_vm_start\00")                 ;; 3
  (data (i32.const 0x2100) "on_configure\00")                ;; 4
  (data (i32.const 0x2140) "on_request_headers\00")          ;; 5
  (data (i32.const 0x2180) "on_request_body\00")             ;; 6
  (data (i32.const 0x21C0) "on_request_trailers\00")         ;; 7
  (data (i32.const 0x2200) "on_response_headers\00")         ;; 8
  (data (i32.const 0x2240) "on_response_body\00")            ;; 9
  (data (i32.const 0x2280) "on_response_trailers\00")        ;; 10
  (data (i32.const 0x22C0) "on_log\00")                      ;; 11
  (data (i32.const 0x2300) "on_done\00")                     ;; 12
  (data (i32.const 0x2340) "on_done_root\00")                ;; 13
  (data (i32.const 0x2380) "on_delete\00")                   ;; 14
  (data (i32.const 0x23C0) "on_delete_root\00")              ;; 15
  (data (i32.const 0x2400) "on_tick\00")                     ;; 16
  (data (i32.const 0x2440) "on_queue_ready\00")              ;; 17
  (data (i32.const 0x2480) "on_http_call_response\00")       ;; 18

  ;; Serialized map (64 bytes): :method=GET, :path=/, :authority=auth
  (data (i32.const 0x8000)
    "\03\00\00\00"
    "\07\00\00\00\03\00\00\00" "\05\00\00\00\01\00\00\00" "\0a\00\00\00\04\00\00\00"
    ":method\00GET\00" ":path\00/\00" ":authority\00auth\00")

  (global $sel (mut i32) (i32.const -1))
  (global $root (mut i32) (i32.const 0))
  (global $queue (mut i32) (i32.const 0))

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

  ;; The selector code, computed once from the VM configuration.
  (func $selector (result i32)
    (local $i i32)
    (if (i32.ge_s (global.get $sel) (i32.const 0))
      (then (return (global.get $sel))))
    (global.set $sel (i32.const 0))
    (if (i32.eqz
          (call $get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 0xFFFFFFFF)
            (i32.const 0x10) (i32.const 0x14)))
      (then
        (local.set $i (i32.const 1))
        (block $done
          (loop $next
            (br_if $done (i32.gt_u (local.get $i) (i32.const 18)))
            (if (call $streq (i32.load (i32.const 0x10)) (i32.load (i32.const 0x14))
                  (i32.add (i32.const 0x2000) (i32.shl (local.get $i) (i32.const 6))))
              (then
                (global.set $sel (local.get $i))
                (br $done)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next)))))
    (global.get $sel))

  ;; Traps if the selector is $code.
  (func $maybe_trap (param $code i32)
    (if (i32.eq (call $selector) (local.get $code))
      (then
        (call $puts (i32.const 0x1000))
        (call $puts (i32.const 0x1080))
        (call $puts (i32.add (i32.const 0x2000) (i32.shl (local.get $code) (i32.const 6))))
        (call $flush (i32.const 2))
        (unreachable))))

  (func (export "proxy_abi_version_0_2_1"))

  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32)
    (if (i32.eqz (local.get $parent))
      (then
        (global.set $root (local.get $ctx))
        (call $maybe_trap (i32.const 1)))
      (else (call $maybe_trap (i32.const 2)))))

  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $report (i32.const 0x10C0) (call $selector))
    (call $maybe_trap (i32.const 3))
    (if (i32.eq (call $selector) (i32.const 17))
      (then
        (drop (call $register_shared_queue (i32.const 0x1100) (i32.const 10) (i32.const 0x18)))
        (global.set $queue (i32.load (i32.const 0x18)))))
    (i32.const 1))

  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (call $maybe_trap (i32.const 4))
    (if (i32.eq (call $selector) (i32.const 16))
      (then (drop (call $set_tick_period (i32.const 10)))))
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $maybe_trap (i32.const 5))
    (if (i32.eq (call $selector) (i32.const 17))
      (then
        (drop (call $enqueue_shared_queue (global.get $queue) (i32.const 0x1180) (i32.const 1)))))
    (if (i32.eq (call $selector) (i32.const 18))
      (then
        (if (i32.eqz
              (call $http_call (i32.const 0x1140) (i32.const 4) (i32.const 0x8000) (i32.const 64)
                (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000)
                (i32.const 0x18)))
          (then (return (i32.const 1))))))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (call $maybe_trap (i32.const 6)) (i32.const 0))
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32)
    (call $maybe_trap (i32.const 7)) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $maybe_trap (i32.const 8)) (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    (call $maybe_trap (i32.const 9)) (i32.const 0))
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32)
    (call $maybe_trap (i32.const 10)) (i32.const 0))
  (func (export "proxy_on_log") (param i32)
    (call $maybe_trap (i32.const 11)))
  (func (export "proxy_on_done") (param $ctx i32) (result i32)
    (if (i32.eq (local.get $ctx) (global.get $root))
      (then (call $maybe_trap (i32.const 13)))
      (else (call $maybe_trap (i32.const 12))))
    (i32.const 1))
  (func (export "proxy_on_delete") (param $ctx i32)
    (if (i32.eq (local.get $ctx) (global.get $root))
      (then (call $maybe_trap (i32.const 15)))
      (else (call $maybe_trap (i32.const 14)))))
  (func (export "proxy_on_tick") (param i32)
    (call $maybe_trap (i32.const 16)))
  (func (export "proxy_on_queue_ready") (param i32 i32)
    (call $maybe_trap (i32.const 17)))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (call $maybe_trap (i32.const 18)))
)
