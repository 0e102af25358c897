//! The `Persist` job: nothing but a durable commit. A batch that only takes broadcast
//! transactions is committed without fsync; a stopping node sends `Persist` so that
//! everything committed before it is on disk. The job itself writes nothing: a batch
//! holding it is always durable (`Job::needs_durability`), and its answer waits for
//! that commit like every other.

use super::{Executor, Step};

impl Executor {
    pub(super) fn persist(&self) -> Step<()> {
        Ok(Ok(()))
    }
}
