;; A hostile app for tests/hostile_apps.rs: every export but `ok` and `peek` misbehaves.
;; Imports only what docs/ABI.md offers, so it deploys; the damage is done at call time.
(module
  (import "cmesh" "output" (func $output (param i32 i32)))
  (import "cmesh" "storage_read" (func $storage_read (param i32) (result i64)))
  (import "cmesh" "storage_write" (func $storage_write (param i32 i32 i32)))
  (import "cmesh" "register_read" (func $register_read (param i32)))

  (memory (export "memory") 1)
  ;; 0..32: the one storage key (zero-padded); 32: its value; 64, 80: canned results.
  (data (i32.const 0) "hostile-key")
  (data (i32.const 32) "\22written\22")
  (data (i32.const 64) "\22ok\22")
  (data (i32.const 80) "null")

  ;; Well-behaved: returns "ok".
  (func (export "ok")
    (call $output (i32.const 64) (i32.const 4)))

  ;; The stored value of the key, or null.
  (func (export "peek")
    (local $len i64)
    (local.set $len (call $storage_read (i32.const 0)))
    (if (i64.eq (local.get $len) (i64.const -1))
      (then (call $output (i32.const 80) (i32.const 4)))
      (else
        (call $register_read (i32.const 256))
        (call $output (i32.const 256) (i32.wrap_i64 (local.get $len))))))

  ;; Never returns: only gas stops it.
  (func (export "spin")
    (loop $forever (br $forever)))

  ;; Grows memory a page at a time until the host refuses, then traps.
  (func (export "grow_bomb")
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable)

  ;; Calls itself forever.
  (func $recurse (export "recurse")
    (call $recurse))

  ;; Sets a result of 1 MiB + 1 byte (from memory grown to 17 pages).
  (func (export "huge")
    (drop (memory.grow (i32.const 16)))
    (call $output (i32.const 0) (i32.const 1048577)))

  ;; A result pointer that wraps around the end of the address space.
  (func (export "wild_pointer")
    (call $output (i32.const -16) (i32.const 100)))

  ;; Writes the key, then traps: the write must leave no trace.
  (func (export "write_then_trap")
    (call $storage_write (i32.const 0) (i32.const 32) (i32.const 9))
    (call $output (i32.const 64) (i32.const 4))
    unreachable)

  ;; Not callable from outside (leading underscore).
  (func (export "_internal")
    (call $output (i32.const 64) (i32.const 4))))
