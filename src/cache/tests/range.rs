//! Range parsing, If-Range and the pieces of a 206 (RFC 9110 §14, §13.1.5).

use super::{entry, get, resp};
use crate::cache::range::{
    if_range_allows, parse_range, partial, ranged, unsatisfiable_fields, ByteRange, Ranged,
    MAX_RANGES,
};

fn r(first: u64, last: u64) -> ByteRange {
    ByteRange { first, last }
}

#[test]
fn ranges_resolve_against_the_length() {
    let cases: &[(&str, Option<Ranged>)] = &[
        ("bytes=0-9", Some(Ranged::Partial(vec![r(0, 9)]))),
        ("bytes=90-", Some(Ranged::Partial(vec![r(90, 99)]))),
        ("bytes=-10", Some(Ranged::Partial(vec![r(90, 99)]))),
        ("bytes=-1000", Some(Ranged::Partial(vec![r(0, 99)]))),
        ("bytes=50-1000", Some(Ranged::Partial(vec![r(50, 99)]))),
        (
            "Bytes=0-0, 99-",
            Some(Ranged::Partial(vec![r(0, 0), r(99, 99)])),
        ),
        // Unsatisfiable specs are dropped; none left is a 416.
        ("bytes=100-, 0-1", Some(Ranged::Partial(vec![r(0, 1)]))),
        ("bytes=100-", Some(Ranged::Unsatisfiable)),
        ("bytes=-0", Some(Ranged::Unsatisfiable)),
        // Malformed, another unit, overlapping: ignored.
        ("bytes=9-1", None),
        ("bytes=a-b", None),
        ("bytes=1-2-3", None),
        ("bytes=", None),
        ("lines=0-1", None),
        ("bytes 0-1", None),
        ("bytes=0-10,5-20", None),
        ("bytes=0-,0-", None),
        ("bytes=99999999999999999999-", None),
    ];
    for (value, expected) in cases {
        assert_eq!(&parse_range(value.as_bytes(), 100), expected, "{value}");
    }
}

#[test]
fn too_many_ranges_are_ignored() {
    let specs: Vec<String> = (0..=MAX_RANGES)
        .map(|i| format!("{}-{}", i * 2, i * 2))
        .collect();
    let value = format!("bytes={}", specs.join(","));
    assert_eq!(parse_range(value.as_bytes(), 1000), None);
    let value = format!("bytes={}", specs[..MAX_RANGES].join(","));
    assert!(
        matches!(parse_range(value.as_bytes(), 1000), Some(Ranged::Partial(v)) if v.len() == MAX_RANGES)
    );
}

#[test]
fn if_range_compares_etags_strongly_and_dates_exactly() {
    let stored = resp(
        200,
        &[
            "ETag: \"a\"",
            "Last-Modified: Sun, 22 Nov 2026 04:00:00 GMT",
            "Date: Sun, 22 Nov 2026 05:00:00 GMT",
        ],
    );
    let e = entry(&get(&[]), &stored);
    for (value, allows) in [
        ("\"a\"", true),
        ("\"b\"", false),
        ("W/\"a\"", false),
        ("Sun, 22 Nov 2026 04:00:00 GMT", true),
        ("Sun, 22 Nov 2026 04:00:01 GMT", false),
        ("garbage", false),
    ] {
        let q = get(&[&format!("If-Range: {value}")]);
        assert_eq!(
            if_range_allows(&q.head.fields, &q.buf, &e),
            allows,
            "{value}"
        );
    }
    // A Last-Modified equal to Date is weak: a date never matches it.
    let weak = resp(
        200,
        &[
            "Last-Modified: Sun, 22 Nov 2026 05:00:00 GMT",
            "Date: Sun, 22 Nov 2026 05:00:00 GMT",
        ],
    );
    let e = entry(&get(&[]), &weak);
    let q = get(&["If-Range: Sun, 22 Nov 2026 05:00:00 GMT"]);
    assert!(!if_range_allows(&q.head.fields, &q.buf, &e));
}

#[test]
fn only_stored_200s_are_ranged() {
    let q = get(&["Range: bytes=0-1"]);
    let ok = entry(&q, &resp(200, &["Cache-Control: max-age=60"]));
    assert_eq!(
        ranged(&q.head.fields, &q.buf, &ok),
        Ranged::Partial(vec![r(0, 1)])
    );
    let not_found = entry(&q, &resp(404, &["Cache-Control: max-age=60"]));
    assert_eq!(ranged(&q.head.fields, &q.buf, &not_found), Ranged::Full);
    let twice = get(&["Range: bytes=0-1", "Range: bytes=2-3"]);
    assert_eq!(ranged(&twice.head.fields, &twice.buf, &ok), Ranged::Full);
}

#[test]
fn one_range_is_a_slice_and_several_are_multipart() {
    let body = b"0123456789";
    let one = partial(body, &[r(2, 4)], Some(b"text/plain"), "B");
    assert_eq!(one.body, b"234");
    assert_eq!(
        one.fields,
        b"Content-Range: bytes 2-4/10\r\nContent-Length: 3\r\n"
    );
    let two = partial(body, &[r(0, 1), r(8, 9)], Some(b"text/plain"), "B");
    let expected = "--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\r\n\
                    --B\r\nContent-Type: text/plain\r\nContent-Range: bytes 8-9/10\r\n\r\n89\r\n--B--\r\n";
    assert_eq!(String::from_utf8_lossy(&two.body), expected);
    assert_eq!(
        String::from_utf8_lossy(&two.fields),
        format!(
            "Content-Type: multipart/byteranges; boundary=B\r\nContent-Length: {}\r\n",
            expected.len()
        )
    );
    let mut fields = Vec::new();
    unsatisfiable_fields(&mut fields, 10);
    assert_eq!(
        fields,
        b"Content-Range: bytes */10\r\nContent-Length: 0\r\n"
    );
}
