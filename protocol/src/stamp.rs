//! Change times: what a change's signed time is, and the times written inside documents.
//!
//! Every change carries its author's time (unix milliseconds, covered by the change hash and
//! so by the signature). Anything in a document that orders events — when a transfer was opened
//! or decided, when a residence was assigned — must equal its change's time, written as
//! [`rfc3339`]; the gate checks it. Times never run backwards along history: a change is
//! never older than the changes it depends on, so a node commits at
//! [`commit_time`] = the later of its clock and its newest head. A change dated more than
//! [`MAX_FUTURE_SECS`] ahead of the receiver's clock is not admitted yet (it waits; it is not
//! refused), which keeps one badly dated change from dragging every later change forward.

use automerge::AutoCommit;
use automerge::transaction::Transactable as _;

/// Earliest change time accepted (2000-01-01T00:00:00Z), unix milliseconds.
pub const MIN_TIME: i64 = 946_684_800_000;
/// Latest change time accepted (2200-01-01T00:00:00Z): years stay four digits.
pub const MAX_TIME: i64 = 7_258_118_400_000;
/// How far ahead of the receiver's clock a change may be dated and still be admitted now,
/// in milliseconds.
pub const MAX_FUTURE_MS: i64 = 300_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `ms` (unix milliseconds, UTC) as `YYYY-MM-DDTHH:MM:SS.mmmZ`. Text order is time order
/// for the range [`MIN_TIME`]..=[`MAX_TIME`].
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// Parses exactly the form [`rfc3339`] writes, to unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let milli = num(20..23)?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let ms = (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) * 1000 + milli;
    (rfc3339(ms) == text).then_some(ms)
}

/// The time a node gives its next change to `doc`: its clock, or the newest head's time if
/// that is later (a change is never older than what it depends on).
///
/// Call it before making the change's ops: reading automerge's heads commits whatever is
/// pending.
pub fn commit_time(doc: &mut AutoCommit, now_ms: i64) -> i64 {
    debug_assert_eq!(
        doc.pending_ops(),
        0,
        "commit_time must be read before the change's ops are made"
    );
    doc.get_heads()
        .iter()
        .filter_map(|h| doc.get_change_meta_by_hash(h).map(|m| m.timestamp))
        .fold(now_ms, i64::max)
        .clamp(MIN_TIME, MAX_TIME)
}

/// The time stamps of one write: its change time, and that time as written in documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Unix milliseconds: the change's own time.
    pub ms: i64,
    /// The same, as [`rfc3339`] text.
    pub text: String,
}

impl Stamp {
    /// The stamp of a change made at `ms`.
    pub fn at(ms: i64) -> Stamp {
        Stamp {
            ms,
            text: rfc3339(ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_and_parse_back() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(MIN_TIME), "2000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(MAX_TIME), "2200-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_000_000_007), "2026-11-18T11:06:40.007Z");
        assert_eq!(rfc3339(951_782_400_999), "2000-02-29T00:00:00.999Z");
        for t in (MIN_TIME..MAX_TIME).step_by(7_919_993_117) {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        for bad in [
            "2026-11-18T09:46:40Z",
            "2026-02-30T00:00:00.000Z",
            "2026-11-18 09:46:40.000Z",
            "2026-13-01T00:00:00.000Z",
            "+026-11-18T09:46:40.000Z",
            "2026-11-18T09:46:40.0a0Z",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_node_never_commits_before_its_newest_head() {
        use automerge::transaction::Transactable;
        let mut doc = AutoCommit::new();
        doc.put(automerge::ROOT, "k", 1).unwrap();
        doc.commit_with(automerge::transaction::CommitOptions::default().with_time(MIN_TIME + 500));
        assert_eq!(commit_time(&mut doc, MIN_TIME + 100), MIN_TIME + 500);
        assert_eq!(commit_time(&mut doc, MIN_TIME + 900), MIN_TIME + 900);
        assert_eq!(commit_time(&mut AutoCommit::new(), 5), MIN_TIME);
    }
}
