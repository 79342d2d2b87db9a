//! Unit tests of the cache building blocks, one file per module under test,
//! with shared helpers to parse heads from strings and build entries.

mod age;
mod control;
mod key;
mod policy;
mod range;
mod store;
mod stored;
mod targeted;

use std::sync::Arc;

use super::age::{parse_http_date, FreshnessOptions};
use super::entry::CachedResponse;
use super::Secs;
use crate::http::head::{parse_request, parse_response, Limits, Method, RequestHead, ResponseHead};

const LIMITS: Limits = Limits {
    max_head_bytes: 16384,
    max_headers: 100,
    max_uri_length: 4096,
};

/// A parsed head together with the buffer its spans point into.
pub(super) struct Req {
    pub buf: Vec<u8>,
    pub head: RequestHead,
}

pub(super) struct Resp {
    pub buf: Vec<u8>,
    pub head: ResponseHead,
}

/// Parses `"GET /x"` plus header lines (each without CRLF) into a request.
pub(super) fn req(line: &str, fields: &[&str]) -> Req {
    let mut raw = format!("{line} HTTP/1.1\r\nHost: example.com\r\n");
    for f in fields {
        raw.push_str(f);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    let buf = raw.into_bytes();
    let mut head = RequestHead::default();
    assert!(parse_request(&buf, &LIMITS, &mut head).unwrap());
    Req { buf, head }
}

pub(super) fn get(fields: &[&str]) -> Req {
    req("GET /x", fields)
}

/// Parses a response with status `status` and the given header lines.
pub(super) fn resp(status: u16, fields: &[&str]) -> Resp {
    let mut raw = format!("HTTP/1.1 {status} Whatever\r\n");
    for f in fields {
        raw.push_str(f);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    let buf = raw.into_bytes();
    let mut head = ResponseHead::default();
    assert!(parse_response(&buf, &LIMITS, Method::Get, &mut head).unwrap());
    Resp { buf, head }
}

/// Unix time of an IMF-fixdate.
pub(super) fn t(date: &str) -> Secs {
    parse_http_date(date.as_bytes()).expect(date)
}

/// A reference instant: Sun, 22 Nov 2026 05:00:00 GMT.
pub(super) const T0_STR: &str = "Sun, 22 Nov 2026 05:00:00 GMT";

pub(super) fn t0() -> Secs {
    t(T0_STR)
}

/// An entry for `r` answering `q`, requested at `req_at` and received at `resp_at`.
pub(super) fn entry_at(
    q: &Req,
    r: &Resp,
    body: &[u8],
    req_at: Secs,
    resp_at: Secs,
) -> CachedResponse {
    CachedResponse::from_response(
        &r.head,
        &r.buf,
        Arc::from(body),
        &q.head,
        &q.buf,
        req_at,
        resp_at,
        &FreshnessOptions::default(),
    )
    .unwrap()
}

/// An entry stored at t0 from a response dated t0.
pub(super) fn entry(q: &Req, r: &Resp) -> CachedResponse {
    entry_at(q, r, b"body", t0(), t0())
}
