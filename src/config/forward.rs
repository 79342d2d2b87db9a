//! `[forward_proxy]`: whether the listeners also serve as a forward proxy
//! (absolute-form requests and CONNECT tunnels), and what it lets through:
//! client addresses, destination rules and ports, users, and how destination
//! names are resolved and cached. Off by default, so that a config written
//! for a reverse proxy never turns into an open relay.

use std::{net::SocketAddr, ops::RangeInclusive, time::Duration};

use toml::Spanned;

use super::{
    raw::{RawForward, RawParent, RawPorts, RawUser, Text},
    resolver::{Keyword, Resolver},
    ConfigError, IpNet,
};

/// One destination rule of `allow` / `deny`: an address block matched
/// against every resolved address, or a host name matched against the
/// requested name and its subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationRule {
    Net(IpNet),
    /// Lower case, without a leading dot: `example.com` matches
    /// `example.com` and `a.example.com`, not `badexample.com`.
    Suffix(String),
}

/// A `[[forward_proxy.user]]`: the name and the argon2 PHC string its
/// password must verify against (never a plain-text password).
#[derive(Debug, Clone)]
pub struct ForwardUser {
    pub name: String,
    pub password_hash: String,
    /// Requests and tunnels in progress at once, per shard; 0 = no limit.
    pub max_connections: u32,
    /// New requests and tunnels per second, per shard; 0 = no limit.
    pub requests_per_second: u32,
}

/// A `[[forward_proxy.parent]]`: a proxy that forward requests and tunnels
/// go through instead of straight to their destination.
#[derive(Debug, Clone)]
pub struct ParentProxy {
    pub addr: SocketAddr,
    /// The `Proxy-Authorization` value to send (`Basic base64(name:password)`), if any.
    pub authorization: Option<String>,
}

/// What to do when no parent can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentFallback {
    /// 502: nothing leaves except through a parent.
    Fail,
    /// Go straight to the destination (with the usual DNS and ACL).
    Direct,
}

impl Keyword for ParentFallback {
    const ALL: &'static [Self] = &[ParentFallback::Fail, ParentFallback::Direct];
    fn name(self) -> &'static str {
        match self {
            ParentFallback::Fail => "fail",
            ParentFallback::Direct => "direct",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub enabled: bool,
    /// Ports absolute-form requests may go to.
    pub allowed_ports: Vec<RangeInclusive<u16>>,
    /// Ports CONNECT may open tunnels to.
    pub allowed_connect_ports: Vec<RangeInclusive<u16>>,
    /// Clients that may use the forward proxy; empty = any.
    pub client_allow: Vec<IpNet>,
    /// Exceptions to the built-in denial of private, loopback, link-local
    /// and multicast destinations.
    pub allow: Vec<DestinationRule>,
    /// Destinations refused whatever else says.
    pub deny: Vec<DestinationRule>,
    /// Empty: no authentication.
    pub users: Vec<ForwardUser>,
    pub realm: String,
    /// How long a verified credential is remembered per shard.
    pub auth_cache_ttl: Duration,
    /// A CONNECT or Upgrade tunnel closes after this long with no byte in either direction.
    pub tunnel_idle: Duration,
    /// Idle connections kept per destination address per shard.
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    /// Resolver threads per shard.
    pub dns_threads: usize,
    /// Names each shard remembers (answers and failures).
    pub dns_cache_size: usize,
    pub dns_ttl: Duration,
    pub dns_negative_ttl: Duration,
    /// Tried in turn (round-robin per shard); empty: always direct.
    pub parents: Vec<ParentProxy>,
    pub parent_fallback: ParentFallback,
    /// GET and HEAD through the response cache (`[cache]` must be on). Off
    /// by default: a cache many users share tells each of them, by its
    /// speed, what the others fetched, so an operator opts in.
    pub cache: bool,
}

/// Squid's "Safe_ports" idea, narrowed: the web's ports and the unprivileged range.
const DEFAULT_PORTS: [RangeInclusive<u16>; 3] = [80..=80, 443..=443, 1025..=65535];

impl Resolver<'_> {
    pub(super) fn forward(&self, raw: RawForward) -> Result<ForwardConfig, ConfigError> {
        let client_allow = match raw.client_allow {
            None => ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| IpNet::parse(n))
                .collect(),
            Some(list) => self.nets("forward_proxy.client_allow", list)?,
        };
        Ok(ForwardConfig {
            enabled: raw.enabled.unwrap_or(false),
            allowed_ports: self.ports(
                "forward_proxy.allowed_ports",
                raw.allowed_ports,
                &DEFAULT_PORTS,
            )?,
            allowed_connect_ports: self.ports(
                "forward_proxy.allowed_connect_ports",
                raw.allowed_connect_ports,
                &[443..=443],
            )?,
            client_allow,
            allow: self.rules("forward_proxy.allow", raw.allow.unwrap_or_default())?,
            deny: self.rules("forward_proxy.deny", raw.deny.unwrap_or_default())?,
            users: self.users(raw.user)?,
            realm: match raw.realm {
                Some(realm) if realm.get_ref().contains(['"', '\\', '\r', '\n']) => {
                    return Err(self.invalid(
                        "forward_proxy.realm",
                        realm.span(),
                        "must not contain quotes, backslashes or line breaks",
                    ))
                }
                Some(realm) => realm.into_inner(),
                None => "shardproxy".into(),
            },
            auth_cache_ttl: self.duration(
                "forward_proxy.auth_cache_ttl",
                raw.auth_cache_ttl,
                Duration::from_secs(300),
            )?,
            tunnel_idle: self.duration(
                "forward_proxy.tunnel_idle",
                raw.tunnel_idle,
                Duration::from_secs(300),
            )?,
            keepalive: self.count("forward_proxy.keepalive", raw.keepalive, 8, 0..1_000_001)?,
            keepalive_timeout: self.duration(
                "forward_proxy.keepalive_timeout",
                raw.keepalive_timeout,
                Duration::from_secs(30),
            )?,
            dns_threads: self.count("forward_proxy.dns_threads", raw.dns_threads, 2, 1..65)?,
            dns_cache_size: self.count(
                "forward_proxy.dns_cache_size",
                raw.dns_cache_size,
                1024,
                1..10_000_001,
            )?,
            dns_ttl: self.duration(
                "forward_proxy.dns_ttl",
                raw.dns_ttl,
                Duration::from_secs(30),
            )?,
            dns_negative_ttl: self.duration(
                "forward_proxy.dns_negative_ttl",
                raw.dns_negative_ttl,
                Duration::from_secs(5),
            )?,
            parents: raw
                .parent
                .into_iter()
                .map(|parent| self.parent(parent))
                .collect::<Result<_, _>>()?,
            parent_fallback: self.keyword(
                "forward_proxy.parent_fallback",
                raw.parent_fallback,
                ParentFallback::Fail,
            )?,
            cache: raw.cache.is_some_and(|c| c.into_inner()),
        })
    }

    fn parent(&self, raw: RawParent) -> Result<ParentProxy, ConfigError> {
        let addr = self.address(
            "forward_proxy.parent.addr",
            raw.addr.get_ref(),
            raw.addr.span(),
        )?;
        let authorization = match (raw.username, raw.password) {
            (None, None) => None,
            (Some(name), password) if !name.get_ref().contains(':') => {
                use base64::Engine as _;
                let password = password.map(|p| p.into_inner()).unwrap_or_default();
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{password}", name.get_ref()));
                Some(format!("Basic {token}"))
            }
            (Some(name), _) => {
                return Err(self.invalid(
                    "forward_proxy.parent.username",
                    name.span(),
                    "must not contain `:`",
                ))
            }
            (None, Some(password)) => {
                return Err(self.invalid(
                    "forward_proxy.parent.password",
                    password.span(),
                    "a password needs a username",
                ))
            }
        };
        Ok(ParentProxy {
            addr,
            authorization,
        })
    }

    fn nets(&self, key: &str, list: Vec<Text>) -> Result<Vec<IpNet>, ConfigError> {
        list.into_iter()
            .map(|entry| {
                IpNet::parse(entry.get_ref()).ok_or_else(|| {
                    let why = format!("`{}` is not an address or address/prefix", entry.get_ref());
                    self.invalid(key, entry.span(), why)
                })
            })
            .collect()
    }

    fn rules(&self, key: &str, list: Vec<Text>) -> Result<Vec<DestinationRule>, ConfigError> {
        list.into_iter()
            .map(|entry| {
                let text = entry.get_ref().trim().to_ascii_lowercase();
                if let Some(net) = IpNet::parse(&text) {
                    return Ok(DestinationRule::Net(net));
                }
                let name = text.trim_start_matches('.');
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if !valid {
                    let why = format!(
                        "`{}` is neither an address block nor a host name",
                        entry.get_ref()
                    );
                    return Err(self.invalid(key, entry.span(), why));
                }
                Ok(DestinationRule::Suffix(name.to_string()))
            })
            .collect()
    }

    fn ports(
        &self,
        key: &str,
        raw: Option<Spanned<Vec<RawPorts>>>,
        default: &[RangeInclusive<u16>],
    ) -> Result<Vec<RangeInclusive<u16>>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(default.to_vec());
        };
        let span = raw.span();
        let port = |n: i64| u16::try_from(n).ok().filter(|&p| p > 0);
        raw.into_inner()
            .into_iter()
            .map(|entry| {
                let range = match &entry {
                    RawPorts::One(n) => port(*n).map(|p| p..=p),
                    RawPorts::Range(text) => text.split_once('-').and_then(|(lo, hi)| {
                        let lo = port(lo.trim().parse().ok()?)?;
                        let hi = port(hi.trim().parse().ok()?)?;
                        (lo <= hi).then_some(lo..=hi)
                    }),
                };
                range.ok_or_else(|| {
                    let shown = match &entry {
                        RawPorts::One(n) => n.to_string(),
                        RawPorts::Range(text) => format!("{text:?}"),
                    };
                    let why = format!("{shown} is not a port (1-65535) or a range \"LO-HI\"");
                    self.invalid(key, span.clone(), why)
                })
            })
            .collect()
    }

    fn users(&self, raw: Vec<RawUser>) -> Result<Vec<ForwardUser>, ConfigError> {
        let mut users: Vec<ForwardUser> = Vec::with_capacity(raw.len());
        for user in raw {
            let name = user.name.get_ref();
            if name.is_empty() || name.contains(':') {
                return Err(self.invalid(
                    "forward_proxy.user.name",
                    user.name.span(),
                    "must be non-empty and contain no `:` (Basic credentials are name:password)",
                ));
            }
            if users.iter().any(|u| &u.name == name) {
                let why = format!("`{name}` is defined twice");
                return Err(self.invalid("forward_proxy.user.name", user.name.span(), why));
            }
            let hash = user.password_hash.get_ref();
            let parsed = argon2::PasswordHash::new(hash).map_err(|e| e.to_string());
            let checked = parsed.and_then(|p| match p.algorithm.as_str().starts_with("argon2") {
                true => Ok(()),
                false => Err(format!("algorithm `{}` is not argon2", p.algorithm)),
            });
            if let Err(e) = checked {
                let why = format!(
                    "not an argon2 PHC string ({e}); `shardproxy hash-password` prints one"
                );
                return Err(self.invalid(
                    "forward_proxy.user.password_hash",
                    user.password_hash.span(),
                    why,
                ));
            }
            let limit = |key: &str, value| {
                self.count(key, value, 0, 0..1_000_001)
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            };
            users.push(ForwardUser {
                name: name.clone(),
                password_hash: hash.clone(),
                max_connections: limit("forward_proxy.user.max_connections", user.max_connections)?,
                requests_per_second: limit(
                    "forward_proxy.user.requests_per_second",
                    user.requests_per_second,
                )?,
            });
        }
        Ok(users)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DestinationRule};

    fn error(section: &str) -> String {
        let text = format!("[forward_proxy]\nenabled = true\n{section}");
        Config::parse(&text, "x.toml").unwrap_err().to_string()
    }

    #[test]
    fn off_by_default_and_alone_when_on() {
        let config = Config::parse(crate::config::DEFAULT_CONFIG, "built-in").unwrap();
        assert!(!config.forward.enabled);
        let alone = Config::parse("[forward_proxy]\nenabled = true\n", "x").unwrap();
        assert!(alone.routes.is_empty() && alone.upstreams.is_empty());
        assert!(Config::parse("[forward_proxy]\nenabled = false\n", "x").is_err());
        let rules = Config::parse(
            "[forward_proxy]\nenabled = true\nallow = [\".Internal.Example\", \"10.0.0.0/8\"]\n",
            "x",
        )
        .unwrap()
        .forward
        .allow;
        assert_eq!(rules[0], DestinationRule::Suffix("internal.example".into()));
        assert!(matches!(rules[1], DestinationRule::Net(_)));
        let parents = Config::parse(
            "[forward_proxy]\nenabled = true\n[[forward_proxy.parent]]\naddr = \"127.0.0.1:3128\"\nusername = \"u\"\npassword = \"p\"\n",
            "x",
        )
        .unwrap()
        .forward
        .parents;
        assert_eq!(parents[0].authorization.as_deref(), Some("Basic dTpw"));
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let e = error("allowed_connect_ports = [443, \"9-2\"]\n");
        assert!(
            e.contains("forward_proxy.allowed_connect_ports") && e.contains("line 3"),
            "{e}"
        );
        let e = error("allowed_ports = [0]\n");
        assert!(e.contains("forward_proxy.allowed_ports"), "{e}");
        let e = error("allow = [\"not a host!\"]\n");
        assert!(e.contains("forward_proxy.allow"), "{e}");
        let e = error("client_allow = [\"10.0.0.0/99\"]\n");
        assert!(e.contains("forward_proxy.client_allow"), "{e}");
        let e = error("[[forward_proxy.user]]\nname = \"a\"\npassword_hash = \"hunter2\"\n");
        assert!(
            e.contains("forward_proxy.user.password_hash") && e.contains("line 5"),
            "{e}"
        );
        let e = error("parent_fallback = \"sometimes\"\n");
        assert!(e.contains("forward_proxy.parent_fallback"), "{e}");
        let e = error("[[forward_proxy.parent]]\naddr = \"127.0.0.1:3128\"\npassword = \"p\"\n");
        assert!(e.contains("forward_proxy.parent.password"), "{e}");
        let e = error("[[forward_proxy.user]]\nname = \"a:b\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"\n");
        assert!(e.contains("forward_proxy.user.name"), "{e}");
    }
}
