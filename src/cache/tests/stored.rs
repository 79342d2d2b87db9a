use crate::cache::stored::{
    write_freshened_head, write_hit_head, write_not_modified_head, write_stored_head,
};

use super::{entry, get, resp, t0, T0_STR};

fn text(v: &[u8]) -> &str {
    std::str::from_utf8(v).unwrap()
}

#[test]
fn stored_head_drops_hop_by_hop_and_reframes() {
    let r = resp(
        200,
        &[
            "Transfer-Encoding: chunked",
            "Connection: keep-alive, X-Private",
            "X-Private: p",
            "Keep-Alive: timeout=5",
            "ETag: \"e\"",
            "Age: 3",
        ],
    );
    let mut out = Vec::new();
    write_stored_head(&mut out, &r.head, &r.buf, 1234, t0());
    assert_eq!(
        text(&out),
        format!(
            "HTTP/1.1 200 Whatever\r\nETag: \"e\"\r\nAge: 3\r\nDate: {T0_STR}\r\n\
             Content-Length: 1234\r\n\r\n"
        )
    );
    // An existing Date is kept; a 204 gets no Content-Length.
    let r = resp(
        204,
        &["Date: Sun, 01 Nov 2026 00:00:00 GMT", "Content-Length: 0"],
    );
    write_stored_head(&mut out, &r.head, &r.buf, 0, t0());
    assert_eq!(
        text(&out),
        "HTTP/1.1 204 Whatever\r\nDate: Sun, 01 Nov 2026 00:00:00 GMT\r\n\r\n"
    );
}

#[test]
fn freshened_head_merges_per_rfc_9111_section_3_2() {
    let stored = entry(
        &get(&[]),
        &resp(
            200,
            &[
                "Date: Sun, 01 Nov 2026 00:00:00 GMT",
                "Age: 100",
                "Cache-Control: max-age=5",
                "X-Keep: k",
                "X-Multi: 1",
                "X-Multi: 2",
            ],
        ),
    );
    let nm = resp(304, &["x-multi: 3", "Content-Length: 77", "TE: trailers"]);
    let mut out = Vec::new();
    write_freshened_head(
        &mut out,
        stored.parsed(),
        stored.head(),
        &nm.head,
        &nm.buf,
        t0(),
    );
    // Old Date and Age are gone (the 304 had none): dated at receipt.
    assert_eq!(
        text(&out),
        format!(
            "HTTP/1.1 200 Whatever\r\nCache-Control: max-age=5\r\nX-Keep: k\r\n\
             Content-Length: 4\r\nx-multi: 3\r\nDate: {T0_STR}\r\n\r\n"
        )
    );
}

#[test]
fn hit_and_not_modified_heads() {
    let e = entry(
        &get(&[]),
        &resp(
            200,
            &[
                &format!("Date: {T0_STR}"),
                "Age: 9",
                "ETag: \"e\"",
                "Cache-Control: max-age=60",
                "Content-Type: text/plain",
                "Vary: Accept",
            ],
        ),
    );
    let mut out = Vec::new();
    write_hit_head(&mut out, e.parsed(), e.head(), 42);
    assert_eq!(
        text(&out),
        format!(
            "HTTP/1.1 200 Whatever\r\nDate: {T0_STR}\r\nETag: \"e\"\r\n\
             Cache-Control: max-age=60\r\nContent-Type: text/plain\r\nVary: Accept\r\n\
             Content-Length: 4\r\nAge: 42\r\n"
        )
    );
    out.clear();
    write_not_modified_head(&mut out, e.parsed(), e.head(), 42);
    assert_eq!(
        text(&out),
        format!(
            "HTTP/1.1 304 Not Modified\r\nDate: {T0_STR}\r\nETag: \"e\"\r\n\
             Cache-Control: max-age=60\r\nVary: Accept\r\nAge: 42\r\n"
        )
    );
}
