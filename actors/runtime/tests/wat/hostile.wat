;; An app that tries to exhaust the node: CPU, memory, stack, bulk operators, tables.
(module
  (import "cmesh" "input_read" (func $input_read (param i32)))
  (import "cmesh" "output" (func $output (param i32 i32)))

  (memory (export "memory") 1)
  (table $t 1 funcref)
  (global $counter (mut i32) (i32.const 0))

  (func (export "loop_forever")
    (loop $forever (br $forever)))

  ;; grows until memory.grow fails, then aborts like a Rust allocation failure
  (func (export "grow_bomb")
    (loop $again
      (br_if $again (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable)

  ;; grows until memory.grow fails; output: pages:i32le last_grow_result:i32le
  (func (export "grow_report")
    (local $last i32)
    (loop $again
      (local.set $last (memory.grow (i32.const 1)))
      (br_if $again (i32.ne (local.get $last) (i32.const -1))))
    (i32.store (i32.const 0) (memory.size))
    (i32.store (i32.const 4) (local.get $last))
    (call $output (i32.const 0) (i32.const 8)))

  (func $recurse (export "recurse")
    (call $recurse))

  ;; input: n:i32le; recurses n levels below the method
  (func $down (param $n i32)
    (if (local.get $n)
      (then (call $down (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "depth")
    (call $input_read (i32.const 0))
    (call $down (i32.load (i32.const 0))))

  (func (export "fill_page")
    (memory.fill (i32.const 0) (i32.const 7) (i32.const 65536)))

  (func (export "fill_loop")
    (loop $again
      (memory.fill (i32.const 0) (i32.const 7) (i32.const 65536))
      (br $again)))

  (func (export "copy_loop")
    (loop $again
      (memory.copy (i32.const 0) (i32.const 1) (i32.const 65535))
      (br $again)))

  ;; output: table.grow results for +100 elements and for past the table limit
  (func (export "table_grow")
    (i32.store (i32.const 0) (table.grow $t (ref.null func) (i32.const 100)))
    (i32.store (i32.const 4) (table.grow $t (ref.null func) (i32.const 100000)))
    (call $output (i32.const 0) (i32.const 8)))

  (func (export "divide_by_zero")
    (drop (i32.div_u (i32.const 1) (i32.load (i32.const 100)))))

  (func (export "load_oob")
    (drop (i32.load (i32.const 70000))))

  ;; leaves marks all over a grown memory
  (func (export "scribble")
    (drop (memory.grow (i32.const 10)))
    (i32.store8 (i32.const 16) (i32.const 0xab))
    (i32.store8 (i32.const 196613) (i32.const 0xab))
    (i32.store8 (i32.const 655367) (i32.const 0xab))
    (global.set $counter (i32.add (global.get $counter) (i32.const 1))))

  ;; fills 4 MiB of grown memory: more than a pooled memory keeps resident
  (func (export "scribble_big")
    (drop (memory.grow (i32.const 63)))
    (memory.fill (i32.const 0) (i32.const 0xab) (i32.const 4194304))
    (global.set $counter (i32.const 9)))

  ;; output: memory.size:i32le, then after growing by 10 the bytes scribble marks, and the
  ;; counter global
  (func (export "peek")
    (local $size i32)
    (local.set $size (memory.size))
    (drop (memory.grow (i32.const 10)))
    (i32.store (i32.const 1000) (local.get $size))
    (i32.store8 (i32.const 1004) (i32.load8_u (i32.const 16)))
    (i32.store8 (i32.const 1005) (i32.load8_u (i32.const 196613)))
    (i32.store8 (i32.const 1006) (i32.load8_u (i32.const 655367)))
    (i32.store8 (i32.const 1007) (global.get $counter))
    (call $output (i32.const 1000) (i32.const 8)))

  ;; functions that leave through a branch to their own label, not `return` or `end`
  (func $exit_br (param i32) (result i32)
    (local.get 0)
    (br 0))
  (func $exit_br_if (param i32) (result i32)
    (local.get 0)
    (br_if 0 (local.get 0))
    (drop)
    (i32.const 7))
  (func $exit_br_table (param i32) (result i32)
    (local.get 0)
    (br_table 0 0 (local.get 0)))
  ;; calls each of them 20,000 times: more than the call-depth limit, never nested
  (func (export "many_branch_exits")
    (local $i i32)
    (loop $again
      (drop (call $exit_br (local.get $i)))
      (drop (call $exit_br_if (local.get $i)))
      (drop (call $exit_br_table (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 20000)))))
)
