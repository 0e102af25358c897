//! How long the replicator waits and how much it asks for at once. A node runs with the
//! defaults; tests pass smaller ones, so that a catch-up of several pages needs dozens
//! of transactions rather than thousands, and a vanished member fails a test in
//! milliseconds rather than seconds.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long one member has to answer one request.
    pub request_timeout: Duration,
    /// How long a request to any member collects answers before it settles for a refusal.
    pub discover_wait: Duration,
    /// Transactions asked for per catch-up page.
    pub page_limit: u32,
    /// How long a leaving node waits for another member to hold its `Leave`.
    pub confirm_limit: Duration,
    /// How long heads named in a notice may be on their way before this node fetches them.
    pub heads_grace: Duration,
    /// How often each held context's heads go out (what repairs lost broadcasts).
    pub gossip_every: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            request_timeout: Duration::from_secs(5),
            discover_wait: Duration::from_millis(1_500),
            page_limit: 2_048,
            confirm_limit: Duration::from_secs(10),
            heads_grace: Duration::from_secs(1),
            gossip_every: Duration::from_secs(2),
        }
    }
}

/// A duration as people read it in an error: whole seconds as `5 s`, else `1500 ms`.
pub fn span(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_seconds_when_whole() {
        assert_eq!(span(Duration::from_secs(5)), "5 s");
        assert_eq!(span(Duration::from_millis(1_500)), "1500 ms");
        assert_eq!(span(Duration::from_millis(80)), "80 ms");
    }
}
