;; Imports something the host does not offer.
(module
  (import "env" "abort" (func (param i32)))
  (memory (export "memory") 1)
  (func (export "run")))
