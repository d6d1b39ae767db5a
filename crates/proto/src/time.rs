//! Wall-clock instants as plain numbers. Protocol logic takes `now` as a parameter so that
//! deadlines, expiries and heartbeats are tested without sleeping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// Reads the system clock. Only IO edges call this; logic receives the value.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(millis))
    }

    pub fn saturating_sub(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_sub(millis))
    }

    /// How long after `earlier` this instant is; zero when it is not after it.
    pub fn duration_since(self, earlier: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

impl From<SystemTime> for UnixMillis {
    fn from(time: SystemTime) -> Self {
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let start = UnixMillis(1_000);
        assert_eq!(
            start.saturating_add(Duration::from_secs(2)),
            UnixMillis(3_000)
        );
        assert_eq!(start.saturating_sub(Duration::from_secs(2)), UnixMillis(0));
        assert_eq!(UnixMillis(500).duration_since(start), Duration::ZERO);
        assert_eq!(
            UnixMillis(u64::MAX).saturating_add(Duration::from_secs(1)),
            UnixMillis(u64::MAX)
        );
    }
}
