//! What the origin serves and how it stamps it: one static body buffer built
//! at startup (every `/bytes/N` body is a prefix of it, or repeats it past its
//! end), the FNV-1a hash of every prefix (so `X-Checksum` and `ETag` cost a
//! table lookup instead of hashing per request), and HTTP-date formatting and
//! parsing for `Date`, `Last-Modified` and `If-Modified-Since`.

use crate::checksum::Fnv64;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Size of the static body buffer; larger bodies repeat it.
pub const BUF_LEN: usize = 1 << 20;
/// Largest body the origin agrees to send.
pub const MAX_BODY: u64 = 1 << 30;

pub struct Content {
    data: Box<[u8]>,
    /// `prefix[k]` = FNV-1a of `data[..k]`.
    prefix: Box<[u64]>,
    /// Whole seconds since the epoch when the origin started: the Last-Modified of everything.
    pub last_modified: u64,
    pub last_modified_text: [u8; 29],
}

static CONTENT: OnceLock<Content> = OnceLock::new();

/// The process-wide content, built on first use.
pub fn content() -> &'static Content {
    CONTENT.get_or_init(Content::build)
}

impl Content {
    fn build() -> Content {
        // Printable and non-periodic at short range, so a body that is
        // shifted, truncated or spliced gets a different checksum.
        let data: Box<[u8]> = (0..BUF_LEN)
            .map(|i| b'a' + ((i * 7 + i / 251) % 26) as u8)
            .collect();
        let mut prefix = Vec::with_capacity(BUF_LEN + 1);
        let mut h = Fnv64::default();
        prefix.push(h.finish());
        for b in data.iter() {
            h.update(std::slice::from_ref(b));
            prefix.push(h.finish());
        }
        let now = unix_now();
        Content {
            data,
            prefix: prefix.into_boxed_slice(),
            last_modified: now,
            last_modified_text: http_date(now),
        }
    }

    /// The bytes of a body of length `n`, piece by piece (one piece unless
    /// `n` exceeds the buffer).
    pub fn pieces(&self, n: u64) -> impl Iterator<Item = &[u8]> {
        let mut left = n;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let take = left.min(BUF_LEN as u64) as usize;
            left -= take as u64;
            Some(&self.data[..take])
        })
    }

    /// FNV-1a of the body of length `n`.
    pub fn checksum(&self, n: u64) -> u64 {
        if n <= BUF_LEN as u64 {
            return self.prefix[n as usize];
        }
        // Rare: bodies over 1 MiB are hashed on the fly.
        let mut h = Fnv64::default();
        for p in self.pieces(n) {
            h.update(p);
        }
        h.finish()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn two(out: &mut [u8], v: u64) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
pub fn http_date(secs: u64) -> [u8; 29] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two(&mut out[5..7], d as u64);
    out[8..11].copy_from_slice(MONTHS[(m - 1) as usize]);
    let y = y.clamp(0, 9999) as u64;
    two(&mut out[12..14], y / 100);
    two(&mut out[14..16], y % 100);
    two(&mut out[17..19], rem / 3600);
    two(&mut out[20..22], rem / 60 % 60);
    two(&mut out[23..25], rem % 60);
    out
}

/// Parses an IMF-fixdate; other (obsolete) formats yield `None` and the
/// condition is then ignored, as RFC 9110 allows for invalid dates.
pub fn parse_http_date(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.len() != 29 || &v[3..5] != b", " || &v[25..] != b" GMT" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let mut n = 0u64;
        for &c in &v[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + (c - b'0') as u64;
        }
        Some(n)
    };
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| &v[8..11] == *m)? as u32 + 1;
    let year = num(12..16)?;
    let (hh, mm, ss) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year as i64, month, day as u32);
    Some(days as u64 * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::fnv64;

    #[test]
    fn dates_round_trip() {
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        for t in [0u64, 951_782_400, 1_709_210_096, 4_102_444_800] {
            assert_eq!(parse_http_date(&http_date(t)), Some(t), "{t}");
        }
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Xxx 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn prefix_checksums_match() {
        let c = content();
        for n in [0u64, 1, 100, 1024, 65_536, BUF_LEN as u64] {
            let body: Vec<u8> = c.pieces(n).flatten().copied().collect();
            assert_eq!(body.len() as u64, n);
            assert_eq!(c.checksum(n), fnv64(&body), "n={n}");
        }
        let n = BUF_LEN as u64 + 10;
        let body: Vec<u8> = c.pieces(n).flatten().copied().collect();
        assert_eq!(c.checksum(n), fnv64(&body));
    }
}
