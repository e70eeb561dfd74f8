//! When a session expires and when a request moves its expiry: pure
//! arithmetic on the configuration, no store involved.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::SessionConfig;

/// `time + duration`, saturating at the latest instant chrono can hold.
pub(crate) fn add(time: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|duration| time.checked_add_signed(duration))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl SessionConfig {
    /// The lifetime a use extends a session by.
    pub(crate) fn lifetime(&self, remember: bool) -> Duration {
        if remember {
            self.remember_lifetime
        } else {
            self.idle_timeout
        }
    }

    /// When a session created at `created_at` ends whatever its use.
    pub(crate) fn absolute_end(&self, created_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.absolute_lifetime
            .map(|lifetime| add(created_at, lifetime))
    }

    /// When a session used now expires: one lifetime from now, never past
    /// its absolute end.
    pub(crate) fn expires_at(
        &self,
        now: DateTime<Utc>,
        created_at: DateTime<Utc>,
        remember: bool,
    ) -> DateTime<Utc> {
        let sliding = add(now, self.lifetime(remember));
        self.absolute_end(created_at)
            .map_or(sliding, |end| sliding.min(end))
    }

    /// Whether a request now moves a stored expiry of `stored_expiry` to
    /// `new_expiry`: once per touch fraction of the lifetime, and only
    /// forward.
    pub(crate) fn should_touch(
        &self,
        now: DateTime<Utc>,
        stored_expiry: DateTime<Utc>,
        remember: bool,
        new_expiry: DateTime<Utc>,
    ) -> bool {
        let lifetime = self.lifetime(remember);
        // When the expiry was last moved: one lifetime before it (saturating,
        // for lifetimes longer than chrono's range).
        let extended_at = chrono::Duration::from_std(lifetime)
            .ok()
            .and_then(|lifetime| stored_expiry.checked_sub_signed(lifetime))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let since = (now - extended_at).to_std().unwrap_or(Duration::ZERO);
        new_expiry > stored_expiry && since >= lifetime.mul_f64(self.touch_fraction)
    }

    /// The cookie's `Max-Age` for a session expiring at `expires_at`; `None`
    /// for a browser-session cookie.
    pub(crate) fn cookie_max_age(
        &self,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        remember: bool,
    ) -> Option<Duration> {
        (self.persistent_cookie || remember)
            .then(|| (expires_at - now).to_std().unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + hours * 3600, 0).unwrap()
    }

    #[test]
    fn expiry_slides_by_the_lifetime_and_stops_at_the_absolute_end() {
        let config = SessionConfig::default()
            .with_idle_timeout(10 * HOUR)
            .with_remember_lifetime(100 * HOUR)
            .with_absolute_lifetime(50 * HOUR);
        assert_eq!(config.expires_at(at(0), at(0), false), at(10));
        assert_eq!(config.expires_at(at(45), at(0), false), at(50), "capped");
        assert_eq!(
            config.expires_at(at(0), at(0), true),
            at(50),
            "remember, capped"
        );
        let open = SessionConfig::default().with_remember_lifetime(100 * HOUR);
        assert_eq!(open.expires_at(at(0), at(0), true), at(100));
    }

    #[test]
    fn a_lifetime_past_chronos_range_saturates() {
        assert_eq!(add(at(0), Duration::MAX), DateTime::<Utc>::MAX_UTC);
        let forever = SessionConfig::default().with_remember_lifetime(Duration::MAX);
        let expiry = forever.expires_at(at(0), at(0), true);
        assert!(
            !forever.should_touch(at(1), expiry, true, expiry),
            "no overflow"
        );
    }

    #[test]
    fn the_expiry_moves_once_per_touch_fraction_and_only_forward() {
        let config = SessionConfig::default()
            .with_idle_timeout(10 * HOUR)
            .with_touch_fraction(0.1);
        // Extended at hour 0: expires at 10; a touch is due from hour 1.
        let stored = at(10);
        let half_hour = at(0) + chrono::Duration::minutes(30);
        assert!(!config.should_touch(
            half_hour,
            stored,
            false,
            at(10) + chrono::Duration::minutes(30)
        ));
        assert!(config.should_touch(at(1), stored, false, at(11)));
        assert!(
            !config.should_touch(at(1), stored, false, at(9)),
            "never backwards"
        );
    }

    #[test]
    fn max_age_is_the_time_left_or_none_for_browser_session_cookies() {
        let config = SessionConfig::default();
        assert_eq!(config.cookie_max_age(at(0), at(2), false), Some(2 * HOUR));
        assert_eq!(
            config.cookie_max_age(at(3), at(2), false),
            Some(Duration::ZERO)
        );
        let session_cookie = SessionConfig::default().with_persistent_cookie(false);
        assert_eq!(session_cookie.cookie_max_age(at(0), at(2), false), None);
        assert_eq!(
            session_cookie.cookie_max_age(at(0), at(2), true),
            Some(2 * HOUR)
        );
    }
}
