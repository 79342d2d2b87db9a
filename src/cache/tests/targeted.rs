//! Targeted fields (RFC 9213): Structured Field dictionary validation and
//! directive types decide whether a targeted field counts.

use super::resp;
use crate::cache::control::ResponseDirectives;
use crate::cache::targeted::{is_dictionary, Targets};

#[test]
fn dictionaries_follow_rfc_8941() {
    let valid = [
        "max-age=60",
        "no-store",
        "  max-age=60, no-cache  ",
        "max-age=60,private",
        "a=1;p, b=?0, c=\"s\\\"q\", d=tok/x:y, e=:aGk=:, f=(1 2);q=3, g=-1.5",
        "*k=1",
    ];
    for value in valid {
        assert!(is_dictionary(value.as_bytes()), "{value:?} should parse");
    }
    let invalid = [
        "",
        "max-age =100",
        "max-age= 100",
        "max-age=10000, &&&&&",
        "Max-Age=1",
        "a=1,",
        "a=1,,b",
        "a=\"unterminated",
        "a=\"bad\\escape\"",
        "a=1234567890123456",
        "a=1.2345",
        "a=?2",
        "a=(1 2",
    ];
    for value in invalid {
        assert!(
            !is_dictionary(value.as_bytes()),
            "{value:?} should not parse"
        );
    }
}

#[test]
fn invalid_or_mistyped_targeted_fields_fall_back_to_cache_control() {
    let targets = Targets::default();
    let parse = |fields: &[&str]| {
        let r = resp(200, fields);
        ResponseDirectives::parse_for(&r.head.fields, &r.buf, &targets)
    };
    for cdn in [
        "max-age=10000, &&&&&",
        "max-age=\"10000\"",
        "max-age =100",
        "max-age=1.5",
    ] {
        let d = parse(&[
            "Cache-Control: no-store",
            &format!("CDN-Cache-Control: {cdn}"),
        ]);
        assert!(d.no_store && !d.targeted, "{cdn:?} should be ignored");
    }
    // A mistyped directive is dropped, the rest of the field still counts.
    let d = parse(&[
        "Cache-Control: no-store",
        "CDN-Cache-Control: max-age=\"5\", s-maxage=60",
    ]);
    assert_eq!((d.no_store, d.max_age, d.s_maxage), (false, None, Some(60)));
}
