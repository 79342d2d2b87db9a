//! Cache-Control parsing (RFC 9111 §5.2) without allocation: an iterator of
//! directives over a field value, and the directive sets the policy reads,
//! one for requests and one for responses.
//!
//! Works only on byte slices of parsed heads; touches nothing else.
//! Leniency choices (each the more restrictive reading the RFC permits):
//! a malformed `max-age`/`s-maxage` counts as 0 (stale), a malformed
//! `stale-while-revalidate`/`stale-if-error`/`min-fresh`/`max-stale` value is
//! ignored, and of repeated directives the first wins (§4.2.1).

use super::field_lines;
use super::targeted::{usable_field, well_typed};
pub use super::targeted::{Targets, MAX_TARGET_NAME};
use crate::http::head::{is_token, Fields};
use crate::http::list_elements;

/// delta-seconds larger than this saturate to it (RFC 9111 §1.2.2).
pub const DELTA_MAX: u32 = 1 << 31;

/// One directive: a name and, maybe, a value (token or quoted string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directive<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
    /// The value was a quoted string; `value` is what lies between the quotes,
    /// with any backslash escapes left in place.
    pub quoted: bool,
}

impl Directive<'_> {
    /// The value as delta-seconds: `Some(Ok(n))`, `Some(Err(_))` when
    /// present but malformed, `None` when absent. Quoted digits are accepted.
    pub fn seconds(&self) -> Option<Result<u32, BadDelta>> {
        self.value.map(parse_delta_seconds)
    }

    /// Case-insensitive name comparison.
    #[inline]
    pub fn is(&self, name: &[u8]) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// A directive value that is not delta-seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not delta-seconds")]
pub struct BadDelta;

/// Parses delta-seconds (`1*DIGIT`), saturating at [`DELTA_MAX`].
pub fn parse_delta_seconds(digits: &[u8]) -> Result<u32, BadDelta> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(BadDelta);
    }
    let mut n: u64 = 0;
    for &d in digits {
        n = n * 10 + u64::from(d - b'0');
        if n >= u64::from(DELTA_MAX) {
            return Ok(DELTA_MAX);
        }
    }
    Ok(n as u32)
}

/// Iterator over the directives of one Cache-Control field value.
/// Garbage between directives is skipped up to the next comma outside a
/// quoted string, so one bad directive cannot hide the ones after it.
pub struct Directives<'a> {
    s: &'a [u8],
    i: usize,
}

/// Directives in `value` (one field line).
pub fn directives(value: &[u8]) -> Directives<'_> {
    Directives { s: value, i: 0 }
}

impl<'a> Directives<'a> {
    fn skip_ows(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// Moves past the next comma that is not inside a quoted string.
    fn skip_to_comma(&mut self) {
        let mut in_quotes = false;
        while let Some(&b) = self.s.get(self.i) {
            self.i += 1;
            match b {
                b'\\' if in_quotes => self.i += 1,
                b'"' => in_quotes = !in_quotes,
                b',' if !in_quotes => return,
                _ => {}
            }
        }
    }

    fn token(&mut self) -> &'a [u8] {
        let start = self.i;
        while self.s.get(self.i).is_some_and(|&b| is_token(b)) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// Reads a quoted string whose opening quote is at `self.i`; `None` if
    /// it is unterminated.
    fn quoted(&mut self) -> Option<&'a [u8]> {
        let start = self.i + 1;
        let mut j = start;
        while let Some(&b) = self.s.get(j) {
            match b {
                b'\\' => j += 2,
                b'"' => {
                    self.i = j + 1;
                    return Some(&self.s[start..j]);
                }
                _ => j += 1,
            }
        }
        self.i = self.s.len();
        None
    }
}

impl<'a> Iterator for Directives<'a> {
    type Item = Directive<'a>;

    fn next(&mut self) -> Option<Directive<'a>> {
        loop {
            while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b',')) {
                self.i += 1;
            }
            if self.i >= self.s.len() {
                return None;
            }
            let name = self.token();
            if name.is_empty() {
                self.skip_to_comma();
                continue;
            }
            self.skip_ows();
            let mut directive = Directive {
                name,
                value: None,
                quoted: false,
            };
            if self.s.get(self.i) == Some(&b'=') {
                self.i += 1;
                self.skip_ows();
                if self.s.get(self.i) == Some(&b'"') {
                    match self.quoted() {
                        Some(v) => {
                            directive.value = Some(v);
                            directive.quoted = true;
                        }
                        // Unterminated quote: the directive is unusable.
                        None => return None,
                    }
                } else {
                    directive.value = Some(self.token());
                }
            }
            // Anything else before the comma is malformed trailing text.
            self.skip_ows();
            match self.s.get(self.i) {
                None | Some(b',') => {}
                Some(_) => {
                    self.skip_to_comma();
                    continue;
                }
            }
            return Some(directive);
        }
    }
}

/// Every directive of every Cache-Control line in `fields`.
pub fn all_directives<'b>(
    fields: &'b Fields,
    buf: &'b [u8],
) -> impl Iterator<Item = Directive<'b>> {
    field_lines(fields, buf, b"cache-control").flat_map(directives)
}

/// Response directives a shared cache acts on (RFC 9111 §5.2.2, RFC 5861).
/// The qualified forms `no-cache="f"` and `private="f"` are treated as their
/// unqualified forms, which §5.2.2.4 and §5.2.2.7 allow and which is always
/// the safer reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    pub max_age: Option<u32>,
    pub s_maxage: Option<u32>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub immutable: bool,
    pub stale_while_revalidate: Option<u32>,
    pub stale_if_error: Option<u32>,
    /// They came from a targeted field (RFC 9213), which also means
    /// Expires is to be ignored.
    pub targeted: bool,
}

impl ResponseDirectives {
    /// The directives of a response for a cache that obeys CDN-Cache-Control.
    pub fn parse(fields: &Fields, buf: &[u8]) -> ResponseDirectives {
        ResponseDirectives::parse_for(fields, buf, &Targets::default())
    }

    /// The directives of a response for a cache with these targeted
    /// fields (RFC 9213 §2.1): those of the first targeted field that is a
    /// valid Structured Field dictionary with a usable directive, else
    /// Cache-Control's.
    pub fn parse_for(fields: &Fields, buf: &[u8], targets: &Targets) -> ResponseDirectives {
        for name in targets.names() {
            if !usable_field(fields, buf, name) {
                continue;
            }
            let typed = field_lines(fields, buf, name)
                .flat_map(directives)
                .filter(well_typed);
            return ResponseDirectives {
                targeted: true,
                ..ResponseDirectives::from_directives(typed)
            };
        }
        ResponseDirectives::from_directives(all_directives(fields, buf))
    }

    fn from_directives<'b>(all: impl Iterator<Item = Directive<'b>>) -> ResponseDirectives {
        let mut d = ResponseDirectives::default();
        for dir in all {
            let n = dir.name;
            let restrictive_secs = || match dir.seconds() {
                Some(Ok(s)) => s,
                _ => 0,
            };
            let lenient_secs = || dir.seconds().and_then(Result::ok);
            match n.len() {
                7 if dir.is(b"max-age") => {
                    d.max_age.get_or_insert_with(restrictive_secs);
                }
                8 if dir.is(b"s-maxage") => {
                    d.s_maxage.get_or_insert_with(restrictive_secs);
                }
                8 if dir.is(b"no-store") => d.no_store = true,
                8 if dir.is(b"no-cache") => d.no_cache = true,
                7 if dir.is(b"private") => d.private = true,
                6 if dir.is(b"public") => d.public = true,
                15 if dir.is(b"must-revalidate") => d.must_revalidate = true,
                16 if dir.is(b"proxy-revalidate") => d.proxy_revalidate = true,
                15 if dir.is(b"must-understand") => d.must_understand = true,
                9 if dir.is(b"immutable") => d.immutable = true,
                22 if dir.is(b"stale-while-revalidate") && d.stale_while_revalidate.is_none() => {
                    d.stale_while_revalidate = lenient_secs();
                }
                14 if dir.is(b"stale-if-error") && d.stale_if_error.is_none() => {
                    d.stale_if_error = lenient_secs();
                }
                _ => {}
            }
        }
        d
    }

    /// Stale responses may never be served without validation (§4.2.4):
    /// must-revalidate, proxy-revalidate, or s-maxage (§5.2.2.10) for a shared cache.
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some()
    }
}

/// `max-stale` with or without a limit (RFC 9111 §5.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    Any,
    Limit(u32),
}

/// Request directives (RFC 9111 §5.2.1, RFC 5861 §4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    pub max_age: Option<u32>,
    pub max_stale: Option<MaxStale>,
    pub min_fresh: Option<u32>,
    pub no_cache: bool,
    pub no_store: bool,
    pub only_if_cached: bool,
    pub stale_if_error: Option<u32>,
}

impl RequestDirectives {
    /// Parses Cache-Control, and `Pragma: no-cache` when the request has no
    /// Cache-Control at all (RFC 9111 §5.4 deprecates Pragma, but HTTP/1.0
    /// clients still send it and honouring it only ever costs a revalidation).
    pub fn parse(fields: &Fields, buf: &[u8]) -> RequestDirectives {
        let mut d = RequestDirectives::default();
        let mut any = false;
        for dir in all_directives(fields, buf) {
            any = true;
            match dir.name.len() {
                7 if dir.is(b"max-age") => {
                    d.max_age.get_or_insert(match dir.seconds() {
                        Some(Ok(s)) => s,
                        _ => 0,
                    });
                }
                9 if dir.is(b"max-stale") && d.max_stale.is_none() => {
                    d.max_stale = match dir.seconds() {
                        None => Some(MaxStale::Any),
                        Some(Ok(s)) => Some(MaxStale::Limit(s)),
                        Some(Err(BadDelta)) => None,
                    };
                }
                9 if dir.is(b"min-fresh") && d.min_fresh.is_none() => {
                    d.min_fresh = dir.seconds().and_then(Result::ok);
                }
                8 if dir.is(b"no-cache") => d.no_cache = true,
                8 if dir.is(b"no-store") => d.no_store = true,
                14 if dir.is(b"only-if-cached") => d.only_if_cached = true,
                14 if dir.is(b"stale-if-error") && d.stale_if_error.is_none() => {
                    d.stale_if_error = dir.seconds().and_then(Result::ok);
                }
                _ => {}
            }
        }
        if !any {
            let pragma = field_lines(fields, buf, b"pragma").flat_map(list_elements);
            for p in pragma {
                if p.eq_ignore_ascii_case(b"no-cache") {
                    d.no_cache = true;
                }
            }
        }
        d
    }
}
