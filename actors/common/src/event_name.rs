//! What an application event may be called. The runtime checks it when a contract emits
//! one, the FQMN parser when a client names one, and the events actor when it publishes
//! it as the last token of `cmesh.events.ctx.<context>.<event>`, so all three agree.

/// Whether `event` is a context event name: `[A-Za-z0-9_-]+` (one subject token).
pub fn is_context_event_name(event: &str) -> bool {
    !event.is_empty()
        && event
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
