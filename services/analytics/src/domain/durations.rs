//! Durations kept in buckets, so that the median of millions of them is read from a few hundred
//! counts: a duration's bucket is its whole seconds `s` under 64 s, then one of 32 buckets per
//! doubling (for `2^e <= s < 2^(e+1)`, the buckets are `2^(e-5)` seconds wide), so a bucket's
//! middle is within 1/64 of every duration in it. The stores compute the same buckets in SQL
//! (analytics_duration_bucket in the PostgreSQL migrations, `duration_bucket` in the SQLite store).

use std::collections::BTreeMap;

/// Buckets per doubling.
const STEPS: i64 = 32;

/// The bucket of a duration of `ms` milliseconds (a negative one is 0).
#[allow(clippy::cast_possible_truncation)]
pub fn bucket(ms: i64) -> i32 {
    let s = ms.max(0) / 1000;
    if s < 2 * STEPS {
        return s as i32;
    }
    let e = i64::from(63 - s.leading_zeros());
    ((e - 5) * STEPS + (s >> (e - 5))) as i32
}

/// The middle of bucket `bucket`, in seconds: the duration a median reads for it.
#[allow(clippy::cast_precision_loss)]
pub fn seconds(bucket: i32) -> f64 {
    let bucket = i64::from(bucket.max(0));
    if bucket < 2 * STEPS {
        return bucket as f64;
    }
    let e = bucket / STEPS + 4;
    let width = 1i64 << (e - 5);
    let lower = (bucket % STEPS + STEPS) << (e - 5);
    lower as f64 + (width - 1) as f64 / 2.0
}

/// The median of the durations counted per bucket in `counts` (bucket, how many), in seconds:
/// the middle one's, or the mean of the two middle ones'. None when there are none.
#[allow(clippy::cast_sign_loss, clippy::cast_possible_wrap)]
pub fn median(counts: &BTreeMap<i32, i64>) -> Option<f64> {
    let total: i64 = counts
        .values()
        .filter(|n| **n > 0)
        .fold(0i64, |sum, n| sum.saturating_add(*n));
    if total == 0 {
        return None;
    }
    // The durations at ranks `low` and `high` (from 0): the same one for an odd count.
    let (low, high) = ((total - 1) / 2, total / 2);
    let (mut seen, mut low_value) = (0i64, None);
    for (bucket, n) in counts.iter().filter(|(_, n)| **n > 0) {
        seen = seen.saturating_add(*n);
        if low_value.is_none() && seen > low {
            low_value = Some(seconds(*bucket));
        }
        if seen > high {
            return low_value.map(|low| (low + seconds(*bucket)) / 2.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket of whole seconds by another reckoning: the doubling found by halving.
    fn reckoned(s: i64) -> (f64, f64) {
        if s < 64 {
            #[allow(clippy::cast_precision_loss)]
            return (s as f64, s as f64);
        }
        let mut width = 1i64;
        while s >= 64 * width {
            width *= 2;
        }
        let lower = s - s % width;
        #[allow(clippy::cast_precision_loss)]
        (lower as f64, (lower + width - 1) as f64)
    }

    #[test]
    fn a_bucket_holds_its_durations_within_a_sixty_fourth() {
        let mut previous = -1;
        for s in (0..5000).chain([86_399, 86_400, 259_200, 31_536_000, i64::MAX / 1000]) {
            let b = bucket(s.saturating_mul(1000).saturating_add(999));
            assert!(b >= previous, "buckets follow the durations");
            previous = b;
            let (lower, upper) = reckoned(s);
            let middle = seconds(b);
            assert!(
                lower <= middle && middle <= upper,
                "{s} s: {middle} not in [{lower}, {upper}]"
            );
            #[allow(clippy::cast_precision_loss)]
            let error = (middle - s as f64).abs() / (s as f64).max(1.0);
            assert!(error <= 1.0 / 64.0, "{s} s: {middle} is {error} off");
        }
        assert_eq!(bucket(-5000), 0, "a negative duration is none");
        assert_eq!(bucket(63_999), 63);
        assert_eq!(bucket(64_000), 64);
    }

    #[test]
    fn the_median_is_the_middle_duration_or_the_mean_of_the_two() {
        let counts = |pairs: &[(i32, i64)]| pairs.iter().copied().collect::<BTreeMap<_, _>>();
        assert_eq!(median(&counts(&[])), None);
        assert_eq!(median(&counts(&[(5, 0)])), None);
        assert_eq!(median(&counts(&[(3, 1), (7, 1), (9, 1)])), Some(7.0));
        assert_eq!(median(&counts(&[(3, 1), (7, 1), (9, 1), (11, 1)])), Some(8.0));
        assert_eq!(median(&counts(&[(3, 2), (9, 2)])), Some(6.0));
        assert_eq!(median(&counts(&[(3, 5), (9, 2)])), Some(3.0));
        // 64 s and 65 s share a bucket 2 s wide: its middle is 64.5 s.
        assert_eq!(median(&counts(&[(bucket(64_000), 1)])), Some(64.5));
    }
}
