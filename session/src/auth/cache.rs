//! The opt-in user cache: `get_user` answers kept for a while, so a signed-in
//! request does not cost a backend call each time.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::sync::lock;

/// Users by their id's JSON text, each with when it was fetched.
pub(crate) struct UserCache<U> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, (U, Instant)>>,
}

impl<U: Clone> UserCache<U> {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The user, if fetched less than the TTL ago.
    pub(crate) fn get(&self, key: &str) -> Option<U> {
        let mut entries = lock(&self.entries);
        match entries.get(key) {
            Some((user, fetched)) if fetched.elapsed() < self.ttl => Some(user.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn put(&self, key: String, user: U) {
        let mut entries = lock(&self.entries);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            // Full: drop what has expired, and if that freed nothing, the
            // oldest entry. Scans happen only at capacity.
            let ttl = self.ttl;
            entries.retain(|_, (_, fetched)| fetched.elapsed() < ttl);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (_, fetched))| *fetched)
                    .map(|(key, _)| key.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (user, Instant::now()));
    }

    pub(crate) fn evict(&self, key: &str) {
        lock(&self.entries).remove(key);
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_within_the_ttl_only() {
        let cache = UserCache::new(Duration::from_millis(30), 10);
        cache.put("1".into(), "ada");
        assert_eq!(cache.get("1"), Some("ada"));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get("1"), None);
    }

    #[test]
    fn stays_within_its_capacity() {
        let cache = UserCache::new(Duration::from_secs(60), 2);
        cache.put("1".into(), "ada");
        cache.put("2".into(), "bob");
        cache.put("3".into(), "cy");
        assert_eq!(lock(&cache.entries).len(), 2);
        assert_eq!(cache.get("1"), None, "the oldest went");
        assert_eq!(cache.get("3"), Some("cy"));
        cache.evict("3");
        assert_eq!(cache.get("3"), None);
    }
}
