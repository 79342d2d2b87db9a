//! A client's address as text (for X-Forwarded-For, the access log, hash
//! keys and ACLs), formatted once per connection into the connection's own
//! bytes: with a connection per request, `to_string()` was a `core::fmt`
//! pass and a heap allocation for every request. Shard-local plain data.

use std::{io::Write, net::IpAddr, ops::Deref};

/// Longest text of an IPv6 address (`ffff:…` with an embedded IPv4 tail).
const MAX_LEN: usize = 45;

/// An IP address as text; empty when the address is unknown.
#[derive(Clone, Copy)]
pub struct PeerText {
    len: u8,
    bytes: [u8; MAX_LEN],
}

impl PeerText {
    pub fn of(addr: Option<IpAddr>) -> PeerText {
        let mut text = PeerText {
            len: 0,
            bytes: [0; MAX_LEN],
        };
        match addr {
            Some(IpAddr::V4(v4)) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    text.push_decimal(octet);
                }
            }
            Some(IpAddr::V6(v6)) => {
                let mut out = &mut text.bytes[..];
                // MAX_LEN holds every IPv6 address's text, so this cannot fail.
                let _ = write!(out, "{v6}");
                let left = out.len();
                text.len = (MAX_LEN - left) as u8;
            }
            None => {}
        }
        text
    }

    fn push(&mut self, byte: u8) {
        self.bytes[usize::from(self.len)] = byte;
        self.len += 1;
    }

    fn push_decimal(&mut self, n: u8) {
        if n >= 100 {
            self.push(b'0' + n / 100);
        }
        if n >= 10 {
            self.push(b'0' + n / 10 % 10);
        }
        self.push(b'0' + n % 10);
    }
}

impl Default for PeerText {
    fn default() -> PeerText {
        PeerText::of(None)
    }
}

impl Deref for PeerText {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_text() {
        let addrs = [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.0.100",
            "::1",
            "::",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ];
        for text in addrs {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(
                &*PeerText::of(Some(ip)),
                ip.to_string().as_bytes(),
                "{text}"
            );
        }
        assert!(PeerText::of(None).is_empty());
    }
}
