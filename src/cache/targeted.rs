//! Targeted cache-control fields (RFC 9213): which field names this cache
//! obeys instead of Cache-Control (its own configured name, then
//! CDN-Cache-Control), and when such a field counts. A targeted field is a
//! Structured Field dictionary (RFC 8941): one that does not parse is
//! ignored as if absent (RFC 9213 §2.1), and so is a directive whose value
//! has the wrong type (`max-age="10"`); a field left without a usable
//! directive does not count either, so Cache-Control applies.
//!
//! Pure functions over parsed heads; touches nothing else. `control` reads
//! the directives themselves.

use super::control::{directives, Directive};
use super::field_lines;
use crate::http::head::Fields;

/// Longest own targeted field name accepted (`cache.targeted_cache_control`).
pub const MAX_TARGET_NAME: usize = 64;

/// The targeted cache-control fields (RFC 9213) this cache obeys instead of
/// Cache-Control, most specific first: its own configured name, if any,
/// then `CDN-Cache-Control`. Kept inline (no allocation) so that the option
/// structs carrying it stay `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    own: [u8; MAX_TARGET_NAME],
    own_len: u8,
}

impl Default for Targets {
    /// CDN-Cache-Control only.
    fn default() -> Self {
        Targets {
            own: [0; MAX_TARGET_NAME],
            own_len: 0,
        }
    }
}

impl Targets {
    /// `own`: the configured field name (validated as a token by the
    /// config); a name longer than [`MAX_TARGET_NAME`] is ignored.
    pub fn new(own: Option<&str>) -> Targets {
        let mut targets = Targets::default();
        if let Some(name) = own.filter(|n| n.len() <= MAX_TARGET_NAME) {
            targets.own[..name.len()].copy_from_slice(name.as_bytes());
            targets.own_len = name.len() as u8;
        }
        targets
    }

    /// The field names in precedence order.
    pub(super) fn names(&self) -> impl Iterator<Item = &[u8]> {
        let own = (self.own_len > 0).then(|| &self.own[..usize::from(self.own_len)]);
        own.into_iter().chain([&b"cdn-cache-control"[..]])
    }
}

/// Whether the `name` field lines make a targeted field this cache uses:
/// present, each line a valid dictionary, at least one well-typed directive.
pub(super) fn usable_field(fields: &Fields, buf: &[u8], name: &[u8]) -> bool {
    let mut lines = field_lines(fields, buf, name).peekable();
    lines.peek().is_some()
        && field_lines(fields, buf, name).all(is_dictionary)
        && field_lines(fields, buf, name)
            .flat_map(directives)
            .any(|d| well_typed(&d))
}

/// Directives whose value must be an sf-integer (RFC 9213 §2.1 keeps
/// Cache-Control's meanings, with Structured Field types).
const INTEGER_DIRECTIVES: [&[u8]; 4] = [
    b"max-age",
    b"s-maxage",
    b"stale-while-revalidate",
    b"stale-if-error",
];

/// Whether a targeted directive's value has the type its name calls for:
/// delta-seconds directives need an unquoted integer; others (booleans,
/// unknown extensions) are taken as they are.
pub(super) fn well_typed(d: &Directive<'_>) -> bool {
    if !INTEGER_DIRECTIVES.iter().any(|n| d.is(n)) {
        return true;
    }
    matches!(d.value, Some(v) if !d.quoted && !v.is_empty() && v.iter().all(u8::is_ascii_digit))
}

/// Whether `value` is an RFC 8941 dictionary (§3.2, parsed as in §4.2.2),
/// leading and trailing spaces allowed. An empty value is not one here
/// (an empty field is ignored, RFC 9213 §2.1).
pub fn is_dictionary(value: &[u8]) -> bool {
    let mut p = Sf { s: value, i: 0 };
    p.skip(b" ");
    if p.at_end() {
        return false;
    }
    loop {
        if !(p.key() && p.member_value() && p.parameters()) {
            return false;
        }
        p.skip(b" \t");
        if p.at_end() {
            return true;
        }
        if !p.eat(b',') {
            return false;
        }
        p.skip(b" \t");
        if p.at_end() {
            return false;
        }
    }
}

/// A cursor over a Structured Field value.
struct Sf<'a> {
    s: &'a [u8],
    i: usize,
}

impl Sf<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.i += usize::from(hit);
        hit
    }

    fn skip(&mut self, set: &[u8]) {
        while self.peek().is_some_and(|b| set.contains(&b)) {
            self.i += 1;
        }
    }

    /// Advances over bytes in `class`; returns how many.
    fn run(&mut self, class: impl Fn(u8) -> bool) -> usize {
        let start = self.i;
        while self.peek().is_some_and(&class) {
            self.i += 1;
        }
        self.i - start
    }

    /// key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )
    fn key(&mut self) -> bool {
        if !self
            .peek()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
        {
            return false;
        }
        self.run(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
        true
    }

    /// `= value` if present: an inner list or a bare item.
    fn member_value(&mut self) -> bool {
        if !self.eat(b'=') {
            return true;
        }
        if self.eat(b'(') {
            return self.inner_list();
        }
        self.bare_item()
    }

    fn inner_list(&mut self) -> bool {
        loop {
            self.skip(b" ");
            if self.eat(b')') {
                return self.parameters();
            }
            if !(self.bare_item() && self.parameters()) {
                return false;
            }
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return false;
            }
        }
    }

    fn parameters(&mut self) -> bool {
        while self.eat(b';') {
            self.skip(b" ");
            if !self.key() {
                return false;
            }
            if self.eat(b'=') && !self.bare_item() {
                return false;
            }
        }
        true
    }

    fn bare_item(&mut self) -> bool {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string(),
            Some(b':') => {
                self.i += 1;
                self.run(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                self.eat(b':')
            }
            Some(b'?') => {
                self.i += 1;
                self.eat(b'0') || self.eat(b'1')
            }
            Some(b) if b.is_ascii_alphabetic() || b == b'*' => {
                self.run(|b| crate::http::head::is_token(b) || b == b':' || b == b'/');
                true
            }
            _ => false,
        }
    }

    /// sf-integer (up to 15 digits) or sf-decimal (12 + 3 digits).
    fn number(&mut self) -> bool {
        self.eat(b'-');
        let whole = self.run(|b| b.is_ascii_digit());
        if !self.eat(b'.') {
            return (1..=15).contains(&whole);
        }
        let fraction = self.run(|b| b.is_ascii_digit());
        (1..=12).contains(&whole) && (1..=3).contains(&fraction)
    }

    /// sf-string: printable ASCII, `\"` and `\\` the only escapes.
    fn string(&mut self) -> bool {
        self.i += 1;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => return true,
                b'\\' => {
                    if !matches!(self.peek(), Some(b'"' | b'\\')) {
                        return false;
                    }
                    self.i += 1;
                }
                0x20..=0x7e => {}
                _ => return false,
            }
        }
        false
    }
}
