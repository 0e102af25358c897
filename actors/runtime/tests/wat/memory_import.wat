;; Imports its memory, which the host does not offer.
(module
  (import "cmesh" "memory" (memory 1))
  (export "memory" (memory 0))
  (func (export "run")))
