//! Who may use the forward proxy and where it may go: the client's address
//! against `client_allow`, the destination's port against the allowed ports,
//! its name against `deny` / `allow` host rules, and every address the name
//! resolved to against `deny` and the built-in SSRF defaults (private,
//! loopback, link-local, multicast and other special-purpose blocks are
//! refused unless `allow` names them). The address check runs on the
//! resolved addresses the proxy then connects to, so a name that resolves
//! to an internal address (DNS rebinding) gets no further than one typed in.
//! Pure functions over the config: no state, nothing shared.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
};

use crate::config::{DestinationRule, ForwardConfig, IpNet};

/// Why a forward request was refused (403); `Display` is the one line the client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    Client(IpAddr),
    Port(u16),
    Name(String),
    Address(IpAddr),
    Special(IpAddr),
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Client(ip) => write!(f, "client {ip} may not use this proxy"),
            Denial::Port(port) => write!(f, "port {port} is not an allowed destination port"),
            Denial::Name(name) => write!(f, "destination {name} is denied"),
            Denial::Address(ip) => write!(f, "destination address {ip} is denied"),
            Denial::Special(ip) => write!(
                f,
                "destination address {ip} is private, loopback, link-local or multicast"
            ),
        }
    }
}

/// Whether `client` may use the forward proxy at all.
pub fn check_client(config: &ForwardConfig, client: IpAddr) -> Result<(), Denial> {
    let allowed =
        config.client_allow.is_empty() || config.client_allow.iter().any(|n| n.contains(client));
    allowed.then_some(()).ok_or(Denial::Client(client))
}

/// The checks that need no address: port (`connect` picks CONNECT's list) and host name rules.
pub fn check_name(
    config: &ForwardConfig,
    host: &str,
    port: u16,
    connect: bool,
) -> Result<(), Denial> {
    let ports = match connect {
        true => &config.allowed_connect_ports,
        false => &config.allowed_ports,
    };
    if !ports
        .iter()
        .any(|range: &RangeInclusive<u16>| range.contains(&port))
    {
        return Err(Denial::Port(port));
    }
    if config.deny.iter().any(|rule| name_matches(rule, host)) {
        return Err(Denial::Name(host.to_string()));
    }
    Ok(())
}

/// Whether the proxy may connect to `ip`, an address `host` resolved to.
pub fn check_address(config: &ForwardConfig, host: &str, ip: IpAddr) -> Result<(), Denial> {
    let ip = canonical(ip);
    if config.deny.iter().any(|rule| address_matches(rule, ip)) {
        return Err(Denial::Address(ip));
    }
    let allowed = || {
        config
            .allow
            .iter()
            .any(|rule| address_matches(rule, ip) || name_matches(rule, host))
    };
    if is_special(ip) && !allowed() {
        return Err(Denial::Special(ip));
    }
    Ok(())
}

fn name_matches(rule: &DestinationRule, host: &str) -> bool {
    let DestinationRule::Suffix(suffix) = rule else {
        return false;
    };
    let (host, suffix) = (host.trim_end_matches('.').as_bytes(), suffix.as_bytes());
    let Some(start) = host.len().checked_sub(suffix.len()) else {
        return false;
    };
    host[start..].eq_ignore_ascii_case(suffix) && (start == 0 || host[start - 1] == b'.')
}

fn address_matches(rule: &DestinationRule, ip: IpAddr) -> bool {
    matches!(rule, DestinationRule::Net(net) if net.contains(ip))
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Blocks no public destination lives in (RFC 6890 and friends).
const SPECIAL_V4: [(Ipv4Addr, u8); 11] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    // Link-local, cloud metadata (169.254.169.254) included.
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    // Reserved, broadcast included.
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

const SPECIAL_V6: [(Ipv6Addr, u8); 5] = [
    (Ipv6Addr::UNSPECIFIED, 128),
    (Ipv6Addr::LOCALHOST, 128),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
];

/// Whether `ip` is in a block the SSRF defaults refuse.
pub fn is_special(ip: IpAddr) -> bool {
    let in_block = |addr: IpAddr, prefix: u8| IpNet { addr, prefix }.contains(ip);
    SPECIAL_V4.iter().any(|&(a, p)| in_block(IpAddr::V4(a), p))
        || SPECIAL_V6.iter().any(|&(a, p)| in_block(IpAddr::V6(a), p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn forward(extra: &str) -> ForwardConfig {
        let text = format!("[forward_proxy]\nenabled = true\n{extra}");
        Config::parse(&text, "test").unwrap().forward
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ssrf_defaults_refuse_special_addresses() {
        let config = forward("");
        for special in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                matches!(
                    check_address(&config, "h", ip(special)),
                    Err(Denial::Special(_))
                ),
                "{special} must be refused"
            );
        }
        for public in ["93.184.216.34", "2606:4700::1111", "172.32.0.1"] {
            assert_eq!(check_address(&config, "h", ip(public)), Ok(()), "{public}");
        }
    }

    #[test]
    fn explicit_allow_and_deny() {
        let config = forward(
            "allow = [\"127.0.0.0/8\", \"internal.example\"]\ndeny = [\"93.184.216.0/24\", \"bad.example\"]\n",
        );
        assert_eq!(check_address(&config, "h", ip("127.0.0.1")), Ok(()));
        assert_eq!(
            check_address(&config, "a.internal.example", ip("10.0.0.1")),
            Ok(())
        );
        assert!(check_address(&config, "notinternal.example", ip("10.0.0.1")).is_err());
        assert!(check_address(&config, "h", ip("93.184.216.34")).is_err());
        assert!(check_name(&config, "x.bad.example", 80, false).is_err());
        assert_eq!(check_name(&config, "good.example", 80, false), Ok(()));
    }

    #[test]
    fn ports_and_clients() {
        let config = forward("allowed_connect_ports = [443, \"8000-8010\"]\n");
        assert_eq!(check_name(&config, "h", 443, true), Ok(()));
        assert_eq!(check_name(&config, "h", 8005, true), Ok(()));
        assert_eq!(check_name(&config, "h", 22, true), Err(Denial::Port(22)));
        assert_eq!(check_name(&config, "h", 22, false), Err(Denial::Port(22)));
        assert_eq!(check_name(&config, "h", 8080, false), Ok(()));
        assert_eq!(check_client(&config, ip("127.0.0.1")), Ok(()));
        assert!(check_client(&config, ip("10.0.0.1")).is_err());
    }
}
