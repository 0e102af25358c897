//! cmesh-events: what happens on a node, told to the mesh and kept verifiable.
//!
//! - Lifecycle and application events are published as JSON envelopes on
//!   `cmesh.events.<service>.<kind>` ([`envelope`]); every node keeps the recent ones
//!   per topic key from the whole mesh ([`recent`]), so a query on any node answers for
//!   all of them.
//! - Each final message goes into a hash chain (CMTP audit trail, [`audit`]), persisted
//!   with group commits and published on `cmesh.audit.<node>`; [`verify_chain`] checks
//!   a stored chain offline.
//!
//! [`EventsActor`] ties these together; its messages are in [`messages`].

pub mod actor;
pub mod audit;
pub mod envelope;
pub mod error;
pub mod messages;
pub mod recent;

pub use actor::{EventsActor, EventsConfig};
pub use audit::{audit_subject, verify_chain, AuditEntry, AuditRecord, VerifyReport, AUDIT_FILE};
pub use envelope::EventEnvelope;
pub use error::{AuditError, ChainProblem, EventsError};
pub use messages::{
    AuditAppend, Emit, EmitApp, EmitContext, EventsStats, Flush, Ready, Recent, Record, Shutdown, Stats, VerifyAudit,
};
