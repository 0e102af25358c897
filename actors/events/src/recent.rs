//! The in-memory "recent events" index. Queries must be answerable on any node without a
//! database, so each node keeps the last few events per topic key from everything it
//! publishes or hears. Everything is bounded (events per topic, number of topics, ids
//! remembered for de-duplication) because remote peers decide how many topics exist.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::envelope::EventEnvelope;

/// The last `per_topic` events of up to `max_topics` topic keys; the topic written least
/// recently is forgotten first.
pub struct RecentStore {
    per_topic: usize,
    max_topics: usize,
    topics: HashMap<String, TopicLog>,
    /// Last-write tick → topic, to find the least recently written topic.
    by_tick: BTreeMap<u64, String>,
    tick: u64,
    seen: SeenIds,
}

struct TopicLog {
    events: VecDeque<Arc<EventEnvelope>>,
    tick: u64,
}

impl RecentStore {
    /// `max_seen` bounds how many event ids are remembered to drop duplicates.
    pub fn new(per_topic: usize, max_topics: usize, max_seen: usize) -> Self {
        RecentStore {
            per_topic: per_topic.max(1),
            max_topics: max_topics.max(1),
            topics: HashMap::new(),
            by_tick: BTreeMap::new(),
            tick: 0,
            seen: SeenIds::new(max_seen.max(1)),
        }
    }

    /// Keeps `event` under each of its topics. Returns false, keeping nothing, if an
    /// event with the same id was seen before.
    pub fn insert(&mut self, event: Arc<EventEnvelope>) -> bool {
        if !self.seen.insert(&event.id) {
            return false;
        }
        for (i, topic) in event.topics.iter().enumerate() {
            if event.topics[..i].contains(topic) {
                continue;
            }
            self.push(topic, Arc::clone(&event));
        }
        true
    }

    fn push(&mut self, topic: &str, event: Arc<EventEnvelope>) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(log) = self.topics.get_mut(topic) {
            self.by_tick.remove(&log.tick);
            log.tick = tick;
            if log.events.len() >= self.per_topic {
                log.events.pop_front();
            }
            log.events.push_back(event);
        } else {
            if self.topics.len() >= self.max_topics {
                if let Some((_, oldest)) = self.by_tick.pop_first() {
                    self.topics.remove(&oldest);
                }
            }
            let mut events = VecDeque::with_capacity(self.per_topic.min(8));
            events.push_back(event);
            self.topics.insert(topic.to_string(), TopicLog { events, tick });
        }
        self.by_tick.insert(tick, topic.to_string());
    }

    /// The most recent `limit` events of `topic` (all kept ones if `limit` is 0), oldest
    /// first, in the order this node recorded them.
    pub fn recent(&self, topic: &str, limit: usize) -> Vec<EventEnvelope> {
        let Some(log) = self.topics.get(topic) else {
            return Vec::new();
        };
        let take = if limit == 0 {
            log.events.len()
        } else {
            limit.min(log.events.len())
        };
        log.events
            .iter()
            .skip(log.events.len() - take)
            .map(|event| EventEnvelope::clone(event))
            .collect()
    }

    /// How many topic keys are kept.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }
}

/// A bounded set of event ids, forgetting the oldest first.
struct SeenIds {
    cap: usize,
    set: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
}

impl SeenIds {
    fn new(cap: usize) -> Self {
        SeenIds {
            cap,
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Returns false if `id` is already present.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        let id: Arc<str> = Arc::from(id);
        self.set.insert(Arc::clone(&id));
        self.order.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmesh_common::Address;

    fn event(seq: u64, topics: &[&str]) -> Arc<EventEnvelope> {
        let node = Address([0xaa; 20]);
        Arc::new(EventEnvelope {
            id: crate::envelope::event_id(&node, seq),
            node,
            ts: seq,
            service: "app".into(),
            kind: "k".into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            caller: None,
            data: serde_json::Value::Null,
        })
    }

    fn seqs(events: &[EventEnvelope]) -> Vec<u64> {
        events.iter().map(|e| e.ts).collect()
    }

    #[test]
    fn keeps_the_last_n_per_topic_oldest_first() {
        let mut store = RecentStore::new(3, 10, 100);
        for seq in 1..=5 {
            assert!(store.insert(event(seq, &["a"])));
        }
        assert_eq!(seqs(&store.recent("a", 0)), vec![3, 4, 5]);
        assert_eq!(seqs(&store.recent("a", 2)), vec![4, 5]);
        assert_eq!(seqs(&store.recent("a", 99)), vec![3, 4, 5]);
        assert!(store.recent("nope", 10).is_empty());
    }

    #[test]
    fn one_event_is_kept_under_each_topic_and_once_per_id() {
        let mut store = RecentStore::new(10, 10, 100);
        assert!(store.insert(event(1, &["R:x", "R:x:transferred", "R:x"])));
        assert!(!store.insert(event(1, &["R:x"])));
        assert_eq!(seqs(&store.recent("R:x", 0)), vec![1]);
        assert_eq!(seqs(&store.recent("R:x:transferred", 0)), vec![1]);
    }

    #[test]
    fn least_recently_written_topic_is_evicted() {
        let mut store = RecentStore::new(10, 2, 100);
        store.insert(event(1, &["a"]));
        store.insert(event(2, &["b"]));
        store.insert(event(3, &["a"])); // a is now newer than b
        store.insert(event(4, &["c"])); // evicts b
        assert_eq!(store.topic_count(), 2);
        assert!(store.recent("b", 0).is_empty());
        assert_eq!(seqs(&store.recent("a", 0)), vec![1, 3]);
        assert_eq!(seqs(&store.recent("c", 0)), vec![4]);
    }

    #[test]
    fn seen_ids_are_bounded() {
        let mut store = RecentStore::new(10, 10, 2);
        store.insert(event(1, &["a"]));
        store.insert(event(2, &["a"]));
        store.insert(event(3, &["a"])); // forgets id 1
        assert!(!store.insert(event(3, &["a"])));
        assert!(store.insert(event(1, &["a"])));
    }
}
