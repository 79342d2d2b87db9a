//! Everything that can go wrong while proxying one request, and the one place
//! where each failure becomes an HTTP status: client faults are 4xx, upstream
//! faults 502/504, and some failures get no response at all (the client left).

use std::io;

use super::acl::Denial;
use crate::{
    config::Failure,
    http::{chunked::ChunkError, head::HeadError},
    upstream::dns::DnsError,
};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad request head: {0}")]
    BadRequest(#[from] HeadError),
    #[error("bad request body: {0}")]
    BadRequestBody(ChunkError),
    #[error("no route for request")]
    NoRoute,
    #[error("over a request rate limit; retry in {0:?}")]
    RateLimited(std::time::Duration),
    #[error("request body over max_body_size")]
    BodyTooLarge,
    #[error("client sent the request head too slowly")]
    ClientHeaderTimeout,
    #[error("client stalled while sending the body")]
    ClientBodyTimeout,
    #[error("client connection lost: {0}")]
    ClientGone(io::Error),
    #[error("cannot connect to upstream: {0}")]
    UpstreamConnect(io::Error),
    #[error("upstream connect timed out")]
    UpstreamConnectTimeout,
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("upstream closed the connection before a complete response")]
    UpstreamClosed,
    #[error("upstream I/O error: {0}")]
    UpstreamIo(io::Error),
    #[error("malformed upstream response: {0}")]
    BadResponse(HeadError),
    #[error("malformed upstream response body: {0}")]
    BadResponseBody(ChunkError),
    #[error("no server of the upstream is up (health checks, ejections)")]
    NoServerUp,
    #[error("shed: every server is at max_conns and the queue is full")]
    Shed,
    #[error("waited queue_timeout for a server under max_conns")]
    QueueTimeout,
    #[error("peer request refused: {0}")]
    PeerForbidden(crate::cluster::sign::SignatureError),
    #[error("response too large to hand to a peer whole")]
    PeerResponseTooLarge,
    #[error("forward proxy: {0}")]
    Denied(Denial),
    #[error("forward proxy: credentials required or wrong")]
    ProxyAuthRequired { realm: String },
    #[error("forward proxy: too many password checks in progress")]
    AuthBusy,
    #[error("forward proxy: {0}")]
    Dns(DnsError),
    #[error("parent proxy refused with status {0}")]
    ParentRefused(u16),
    /// A forward destination or parent proxy could not be connected to;
    /// unlike a reverse upstream's failure, the client is told which and why.
    #[error("forward proxy: {what}")]
    Unreachable { what: String, timed_out: bool },
    #[error("forward proxy: {0}")]
    UserLimit(String),
}

impl ProxyError {
    /// The status to answer with, if the client can still be answered at all.
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            ProxyError::BadRequest(e) => match e {
                HeadError::UriTooLong => 414,
                HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
                HeadError::UnsupportedExpectation => 417,
                HeadError::MethodNotImplemented => 501,
                HeadError::Malformed(_) | HeadError::NotOriginForm => 400,
            },
            ProxyError::BadRequestBody(_) => 400,
            ProxyError::NoRoute => 404,
            ProxyError::PeerForbidden(_) => 403,
            ProxyError::RateLimited(_) => 429,
            ProxyError::BodyTooLarge => 413,
            ProxyError::ClientHeaderTimeout | ProxyError::ClientBodyTimeout => 408,
            ProxyError::ClientGone(_) => return None,
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamClosed
            | ProxyError::UpstreamIo(_)
            | ProxyError::BadResponse(_)
            | ProxyError::BadResponseBody(_)
            | ProxyError::PeerResponseTooLarge => 502,
            ProxyError::UpstreamConnectTimeout | ProxyError::UpstreamTimeout => 504,
            // Overload and no server: 503, which always carries Retry-After.
            ProxyError::NoServerUp | ProxyError::Shed | ProxyError::QueueTimeout => 503,
            ProxyError::Denied(_) => 403,
            ProxyError::ProxyAuthRequired { .. } => 407,
            ProxyError::AuthBusy => 503,
            ProxyError::UserLimit(_) => 429,
            ProxyError::Dns(DnsError::TimedOut(_)) => 504,
            ProxyError::Dns(DnsError::Busy) => 503,
            ProxyError::Dns(_) | ProxyError::ParentRefused(_) => 502,
            ProxyError::Unreachable { timed_out, .. } => match timed_out {
                true => 504,
                false => 502,
            },
        })
    }

    /// What the forward proxy's client can act on beyond the status: extra
    /// field lines (each ending in CRLF) and a one-line reason for the body.
    pub fn detail(&self) -> Option<(String, String)> {
        match self {
            ProxyError::ProxyAuthRequired { realm } => Some((
                format!("Proxy-Authenticate: Basic realm=\"{realm}\", charset=\"UTF-8\"\r\n"),
                "proxy credentials required".into(),
            )),
            ProxyError::Denied(denial) => Some((String::new(), denial.to_string())),
            ProxyError::Dns(e) => Some((String::new(), e.to_string())),
            ProxyError::ParentRefused(_) => Some((String::new(), self.to_string())),
            ProxyError::Unreachable { what, .. } | ProxyError::UserLimit(what) => {
                Some((String::new(), what.clone()))
            }
            ProxyError::AuthBusy => Some((String::new(), "too many password checks".into())),
            _ => None,
        }
    }

    /// The failure kind a retry policy or outlier detection sees, if this
    /// is an upstream failure before any response head arrived.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            ProxyError::UpstreamConnect(_) | ProxyError::UpstreamConnectTimeout => {
                Some(Failure::Connect)
            }
            ProxyError::UpstreamClosed | ProxyError::UpstreamIo(_) => Some(Failure::Reset),
            ProxyError::UpstreamTimeout => Some(Failure::Timeout),
            _ => None,
        }
    }

    /// Whether the connection can carry on after this error's response
    /// (when the request had no body): the head was consumed and nothing
    /// went upstream.
    pub fn leaves_connection_in_sync(&self) -> bool {
        matches!(
            self,
            ProxyError::NoRoute
                | ProxyError::RateLimited(_)
                | ProxyError::Denied(_)
                | ProxyError::ProxyAuthRequired { .. }
                | ProxyError::UserLimit(_)
        )
    }

    /// Whether the failure is the upstream's (logged as a warning) rather
    /// than the client's. Shedding is neither: it is the proxy protecting the
    /// upstream, and a warning per shed request would flood the log exactly
    /// when the machine is busiest.
    pub fn is_upstream(&self) -> bool {
        let shed = matches!(self, ProxyError::Shed | ProxyError::QueueTimeout);
        !shed && self.status().is_some_and(|s| s >= 500)
    }
}

/// Classifies an upstream read error.
pub fn upstream_read_error(e: io::Error) -> ProxyError {
    match e.kind() {
        io::ErrorKind::TimedOut => ProxyError::UpstreamTimeout,
        _ => ProxyError::UpstreamIo(e),
    }
}
