//! When a webhook delivery is attempted: at once, then after each failure by the documented
//! schedule (about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h: eight attempts over about
//! 27 hours), each delay spread by up to a tenth so that endpoints failing together are not
//! retried in lockstep.

use std::time::Duration;

/// The delay before each retry: the nth entry follows the nth failed attempt.
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// Attempts a delivery gets before it fails.
pub const MAX_ATTEMPTS: i32 = RETRY_DELAYS.len() as i32 + 1;

/// The delay before the attempt after `attempts` failed ones, spread by `jitter` (0 to 1) up
/// to a tenth; None once the schedule is spent.
pub fn next_delay(attempts: i32, jitter: f64) -> Option<Duration> {
    let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
    let base = RETRY_DELAYS.get(index)?;
    Some(base.mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 10.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_attempts_follow_the_documented_schedule() {
        assert_eq!(MAX_ATTEMPTS, 8);
        assert_eq!(next_delay(0, 0.0), None);
        assert_eq!(next_delay(1, 0.0), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(2, 0.0), Some(Duration::from_secs(300)));
        assert_eq!(next_delay(7, 0.0), Some(Duration::from_secs(36000)));
        assert_eq!(next_delay(8, 0.0), None);
        assert_eq!(next_delay(1, 1.0), Some(Duration::from_millis(5500)));
        let total: Duration = RETRY_DELAYS.iter().sum();
        assert_eq!(total.as_secs(), 5 + 300 + 1800 + 7200 + 18000 + 72000);
    }
}
