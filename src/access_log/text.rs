//! The small text writers an access log line is made of, hand-written
//! because a shard runs them once per request: a JSON string escaper that
//! writes straight into the shard's batch, decimal numbers, milliseconds and
//! an IPv4 socket address without `core::fmt`'s dynamic dispatch. Measured
//! against `serde_json` and `write!`: docs/PERFORMANCE.md (access log).

use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::net::PeerText;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `text` as a JSON string: quoted, `"` `\` and controls escaped,
/// invalid UTF-8 replaced by U+FFFD (as `String::from_utf8_lossy` does), so
/// the line is valid JSON whatever the client sent.
pub fn json_string(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    if is_plain(text) {
        // The common case (methods, paths, user agents): one copy, no
        // UTF-8 validation (ASCII is UTF-8) and no escape scan.
        out.extend_from_slice(text);
        out.push(b'"');
        return;
    }
    let mut rest = text;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                json_escape(out, valid.as_bytes());
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                json_escape(out, valid);
                out.extend_from_slice("\u{FFFD}".as_bytes());
                match e.error_len() {
                    Some(bad) => rest = &after[bad..],
                    // A sequence cut short at the end.
                    None => break,
                }
            }
        }
    }
    out.push(b'"');
}

/// Printable ASCII other than `"` and `\`: text a JSON string and a quoted
/// log field take as it is. No early exit, so the compiler can check many
/// bytes at a time; the fields are short.
pub fn is_plain(text: &[u8]) -> bool {
    let special = |b: u8| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\';
    !text.iter().fold(false, |seen, &b| seen | special(b))
}

/// Escapes valid UTF-8 for inside a JSON string; runs without an escape
/// are copied in one piece.
fn json_escape(out: &mut Vec<u8>, valid: &[u8]) {
    let mut start = 0;
    for (i, &b) in valid.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&valid[start..i]);
        start = i + 1;
        if short.is_empty() {
            let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]];
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&hex);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&valid[start..]);
}

/// Appends `n` in decimal. A log line's numbers mostly have one to three
/// digits (a status, a shard, an address octet): those take a fixed-size
/// copy each, which compiles to a store instead of a `memcpy` call.
pub fn uint(out: &mut Vec<u8>, mut n: u64) {
    let digit = |n: u64| b'0' + (n % 10) as u8;
    match n {
        0..=9 => return out.push(digit(n)),
        10..=99 => return out.extend_from_slice(&[digit(n / 10), digit(n)]),
        100..=999 => return out.extend_from_slice(&[digit(n / 100), digit(n / 10), digit(n)]),
        _ => {}
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = digit(n);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[at..] {
        out.push(digit);
    }
}

/// Appends `d` as milliseconds with three decimals (microsecond resolution),
/// e.g. `12.034`: a JSON number.
pub fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    uint(out, micros / 1000);
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Appends `addr` as `Display` shows it (`1.2.3.4:80`, `[::1]:80`); IPv4,
/// the usual upstream, without `core::fmt`.
pub fn socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            out.extend_from_slice(&PeerText::of(Some(IpAddr::V4(*v4.ip()))));
            out.push(b':');
            uint(out, u64::from(v4.port()));
        }
        // Writing to a Vec cannot fail.
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_strings_match_serde_json() {
        let cases: [&[u8]; 7] = [
            b"plain",
            b"q\"uo\\te",
            b"\n\r\t\x01\x08\x0c\x1f\x7f",
            "caf\u{e9} \u{1F600}".as_bytes(),
            b"bad \xff utf-8 \xe2\x82",
            b"\xe2\x82 cut in the middle",
            b"",
        ];
        for case in cases {
            let ours = text(|out| json_string(out, case));
            let lossy = String::from_utf8_lossy(case);
            assert_eq!(ours, serde_json::to_string(&lossy).unwrap(), "{case:?}");
            let back: String = serde_json::from_str(&ours).unwrap();
            assert_eq!(back, lossy);
        }
    }

    #[test]
    fn numbers_and_addresses() {
        for n in [0, 7, 10, 99, 100, 999, 1000, 1_000_000, u64::MAX] {
            assert_eq!(text(|out| uint(out, n)), n.to_string());
        }
        assert_eq!(
            text(|out| millis(out, Duration::from_micros(12_034))),
            "12.034"
        );
        assert_eq!(text(|out| millis(out, Duration::from_nanos(999))), "0.000");
        assert_eq!(text(|out| millis(out, Duration::from_secs(3))), "3000.000");
        for addr in ["10.0.0.255:8080", "127.0.0.1:1", "[::1]:443"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(text(|out| socket_addr(out, addr)), addr.to_string());
        }
    }
}
