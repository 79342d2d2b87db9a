//! Timestamps for access log lines, UTC. The calendar work is `httpdate`'s
//! (already a dependency for `Date` headers): its fixed-layout IMF-fixdate,
//! `Sun, 06 Nov 1994 08:49:37 GMT`, is cut into the fields the two log
//! formats arrange differently.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A moment broken into calendar fields (UTC), as text. The date and time
/// of day are formatted once a second, in both layouts; a line then copies
/// them and adds the milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Civil {
    /// `10/Oct/2000:13:55:36 +0000`, the combined format's time.
    clf: String,
    /// `2000-10-10T13:55:36`: RFC 3339 up to the seconds.
    rfc3339_seconds: String,
    /// Whole seconds since the epoch the texts show.
    secs: u64,
    millis: u32,
}

impl Civil {
    pub fn of(time: SystemTime) -> Civil {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        // `Sun, 06 Nov 1994 08:49:37 GMT`: fixed layout, cut into fields.
        let imf = httpdate::fmt_http_date(time);
        let field = |range: std::ops::Range<usize>| imf.get(range).unwrap_or("?");
        let (day, month, year, clock) = (field(5..7), field(8..11), field(12..16), field(17..25));
        let month_number = MONTHS.iter().position(|m| *m == month).unwrap_or(0) + 1;
        Civil {
            clf: format!("{day}/{month}/{year}:{clock} +0000"),
            rfc3339_seconds: format!("{year}-{month_number:02}-{day}T{clock}"),
            secs: since.as_secs(),
            millis: since.subsec_millis(),
        }
    }

    /// Moves `self` to `time`, formatting the date again only when the
    /// second changed: a busy shard formats it once a second, not per request.
    pub fn update(&mut self, time: SystemTime) {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        if since.as_secs() != self.secs {
            *self = Civil::of(time);
        }
        self.millis = since.subsec_millis();
    }

    /// `10/Oct/2000:13:55:36 +0000`, the combined format's time.
    pub fn write_clf(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.clf.as_bytes());
    }

    /// `2000-10-10T13:55:36.123Z` (RFC 3339), written into `out`.
    pub fn write_rfc3339(&self, out: &mut Vec<u8>) {
        let ms = self.millis;
        out.extend_from_slice(self.rfc3339_seconds.as_bytes());
        out.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100 % 10) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    }

    /// [`Civil::write_rfc3339`] as a `String`.
    #[cfg(test)]
    pub fn rfc3339(&self) -> String {
        let mut text = Vec::new();
        self.write_rfc3339(&mut text);
        String::from_utf8(text).expect("ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        let at = |ms: u64| Civil::of(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 12:34:56.789, a leap day in a 400-year leap year.
        assert_eq!(at(951_827_696_789).rfc3339(), "2000-02-29T12:34:56.789Z");
        assert_eq!(at(4_102_444_799_000).rfc3339(), "2099-12-31T23:59:59.000Z");
        let mut clf = Vec::new();
        at(971_186_136_000).write_clf(&mut clf);
        assert_eq!(
            String::from_utf8(clf).unwrap(),
            "10/Oct/2000:13:55:36 +0000"
        );
    }
}
