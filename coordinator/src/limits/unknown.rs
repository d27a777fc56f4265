//! A short, bounded memory of token hashes that matched no live token, so a caller repeating
//! an unknown token costs no database lookup. Keyed by the token's SHA-256, never the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Unknown token hashes, each remembered for `ttl`, at most `capacity` of them.
#[derive(Debug, Clone)]
pub struct UnknownTokens {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    capacity: usize,
    ttl: Duration,
}

impl UnknownTokens {
    /// A cache of `capacity` entries (0 turns it off), each kept for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        UnknownTokens {
            seen: Arc::default(),
            capacity,
            ttl,
        }
    }

    /// Whether `hash` was found unknown less than `ttl` ago.
    pub fn contains(&self, hash: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(hash) {
            Some(at) if at.elapsed() < self.ttl => true,
            Some(_) => {
                seen.remove(hash);
                false
            }
            None => false,
        }
    }

    /// Remembers `hash` as unknown. When full, expired entries go first, then the oldest.
    pub fn insert(&self, hash: &str) {
        if self.capacity == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= self.capacity && !seen.contains_key(hash) {
            let ttl = self.ttl;
            seen.retain(|_, at| at.elapsed() < ttl);
            if seen.len() >= self.capacity {
                // Still full of fresh entries: a flood of distinct tokens. Drop the oldest
                // tenth at once so the next inserts do not each scan the map.
                let mut ages: Vec<Instant> = seen.values().copied().collect();
                ages.sort_unstable();
                let cut = ages[(ages.len() / 10).min(ages.len() - 1)];
                seen.retain(|_, at| *at > cut);
            }
        }
        seen.insert(hash.to_owned(), Instant::now());
    }

    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_a_while_and_stays_bounded() {
        let cache = UnknownTokens::new(100, Duration::from_secs(60));
        cache.insert("a");
        assert!(cache.contains("a"));
        assert!(!cache.contains("b"));
        for i in 0..1_000 {
            cache.insert(&format!("h{i}"));
            assert!(cache.len() <= 100, "{} entries", cache.len());
        }
        assert!(cache.contains("h999"));

        let short = UnknownTokens::new(10, Duration::ZERO);
        short.insert("a");
        assert!(!short.contains("a"), "expired at once");
        let off = UnknownTokens::new(0, Duration::from_secs(60));
        off.insert("a");
        assert!(!off.contains("a"));
    }
}
