//! Forward-proxy users: `Proxy-Authorization: Basic` checked against the
//! `[[forward_proxy.user]]` argon2 hashes (RFC 9110 §11.7.1, RFC 7617).
//!
//! argon2 is slow on purpose (tens of milliseconds and megabytes per check),
//! so a check never runs on the shard: it goes to the shard's own hashing
//! thread (`crate::offload`) with a bounded queue, and a flood of guesses
//! beyond the queue is refused at once (503) instead of stalling the shard.
//! A verified credential is remembered per shard for `auth_cache_ttl`, keyed
//! by the exact header token, so a user's requests pay for one check per
//! TTL; a wrong one is remembered briefly too, so a client retrying the same
//! wrong password costs nothing. Shard-local state only.

use std::{
    cell::RefCell,
    collections::HashMap,
    time::{Duration, Instant},
};

use argon2::{password_hash::PasswordVerifier, Argon2, PasswordHash};
use base64::Engine as _;

use super::error::ProxyError;
use crate::{
    config::ForwardConfig,
    http::head::RequestHead,
    offload::{Offload, OffloadError},
};

/// Credentials one shard remembers; past this, expired ones are dropped and
/// then the table is cleared (a new check per user is the only cost).
const REMEMBERED: usize = 4096;
/// How long a wrong credential is remembered: long enough to absorb a
/// client's retries, short enough that a fixed typo is not held against it.
const WRONG_TTL: Duration = Duration::from_secs(5);
/// Password checks one shard queues for its hashing thread.
const QUEUE: usize = 16;

struct Remembered {
    /// Index into `users`, or `None` for a wrong credential.
    user: Option<usize>,
    expires: Instant,
}

/// One shard's authenticator.
pub struct Auth {
    hasher: Offload,
    remembered: RefCell<HashMap<Box<[u8]>, Remembered>>,
}

impl Auth {
    pub fn start(shard: usize) -> std::io::Result<Auth> {
        Ok(Auth {
            hasher: Offload::start(&format!("auth-{shard}"), 1, QUEUE)?,
            remembered: RefCell::new(HashMap::new()),
        })
    }

    /// The index of the user the request's `Proxy-Authorization` proves,
    /// or `None` when no users are configured. Missing or wrong credentials
    /// are a 407; a full hashing queue a 503.
    pub async fn authenticate(
        &self,
        config: &ForwardConfig,
        req: &RequestHead,
        buf: &[u8],
    ) -> Result<Option<usize>, ProxyError> {
        if config.users.is_empty() {
            return Ok(None);
        }
        let required = || ProxyError::ProxyAuthRequired {
            realm: config.realm.clone(),
        };
        let token = basic_token(req, buf).ok_or_else(required)?;
        if let Some(known) = self.recall(token) {
            return known.map(Some).ok_or_else(required);
        }
        let token = token.to_vec();
        let user = match credentials(&token) {
            Some((name, password)) => match config.users.iter().position(|u| u.name == name) {
                Some(index) => {
                    let hash = config.users[index].password_hash.clone();
                    let verified = self
                        .hasher
                        .run(move || verify(&hash, &password))
                        .await
                        .map_err(|e| match e {
                            OffloadError::Busy | OffloadError::Gone => ProxyError::AuthBusy,
                        })?;
                    verified.then_some(index)
                }
                // An unknown name costs no hash: refused at once.
                None => None,
            },
            None => None,
        };
        self.remember(token, user, config.auth_cache_ttl);
        user.map(Some).ok_or_else(required)
    }

    /// What is remembered about `token`: `Some(Some(user))` verified,
    /// `Some(None)` recently wrong, `None` unknown or expired.
    fn recall(&self, token: &[u8]) -> Option<Option<usize>> {
        let remembered = self.remembered.borrow();
        let entry = remembered.get(token)?;
        (entry.expires > Instant::now()).then_some(entry.user)
    }

    fn remember(&self, token: Vec<u8>, user: Option<usize>, ttl: Duration) {
        let ttl = if user.is_some() { ttl } else { WRONG_TTL };
        let mut remembered = self.remembered.borrow_mut();
        if remembered.len() >= REMEMBERED {
            let now = Instant::now();
            remembered.retain(|_, entry| entry.expires > now);
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
        }
        let expires = Instant::now() + ttl;
        remembered.insert(token.into_boxed_slice(), Remembered { user, expires });
    }
}

/// The base64 token of a `Proxy-Authorization: Basic TOKEN` field.
fn basic_token<'b>(req: &RequestHead, buf: &'b [u8]) -> Option<&'b [u8]> {
    let field = req
        .fields
        .headers
        .iter()
        .find(|h| h.name.of(buf).eq_ignore_ascii_case(b"proxy-authorization"))?;
    let value = field.value.of(buf);
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = (&value[..space], &value[space + 1..]);
    scheme
        .eq_ignore_ascii_case(b"basic")
        .then(|| crate::http::trim_ows(token))
}

/// `name:password` from a Basic token; the password may itself contain `:`.
fn credentials(token: &[u8]) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// Whether `password` matches the PHC string `hash` (run on the hashing thread).
fn verify(hash: &str, password: &str) -> bool {
    // The config checked the string; a hash that fails to parse verifies nothing.
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A PHC string for `password` with a fresh random salt and argon2id's
/// default cost (`shardproxy hash-password`).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        http::head::{parse_request_with, AcceptedForms, Limits},
    };

    fn forward_with_user(hash: &str) -> ForwardConfig {
        let text = format!(
            "[forward_proxy]\nenabled = true\n[[forward_proxy.user]]\nname = \"ann\"\npassword_hash = \"{hash}\"\n"
        );
        Config::parse(&text, "test").unwrap().forward
    }

    fn parsed(raw: &[u8]) -> RequestHead {
        let limits = Limits {
            max_head_bytes: 4096,
            max_headers: 32,
            max_uri_length: 1024,
        };
        let mut head = RequestHead::default();
        assert!(
            parse_request_with(raw, &limits, AcceptedForms::OriginAndProxy, &mut head).unwrap()
        );
        head
    }

    #[test]
    fn verifies_remembers_and_refuses() {
        let hash = hash_password("s3cret:x").unwrap();
        assert!(verify(&hash, "s3cret:x"));
        assert!(!verify(&hash, "wrong"));
        let config = forward_with_user(&hash);
        let token = base64::engine::general_purpose::STANDARD.encode("ann:s3cret:x");
        let good = format!(
            "GET http://h/ HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic {token}\r\n\r\n"
        );
        let bad =
            "GET http://h/ HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic YW5uOm5v\r\n\r\n";
        let none = "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n";
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let auth = Auth::start(0).unwrap();
            let check = |raw: &str| {
                let head = parsed(raw.as_bytes());
                let auth = &auth;
                let config = &config;
                let raw = raw.to_string();
                async move { auth.authenticate(config, &head, raw.as_bytes()).await }
            };
            assert_eq!(check(&good).await.unwrap(), Some(0));
            assert!(auth.recall(token.as_bytes()) == Some(Some(0)), "remembered");
            assert_eq!(check(&good).await.unwrap(), Some(0));
            assert!(matches!(
                check(bad).await,
                Err(ProxyError::ProxyAuthRequired { .. })
            ));
            assert_eq!(
                auth.recall(b"YW5uOm5v"),
                Some(None),
                "a wrong one is remembered"
            );
            assert!(matches!(
                check(none).await,
                Err(ProxyError::ProxyAuthRequired { .. })
            ));
        });
    }
}
