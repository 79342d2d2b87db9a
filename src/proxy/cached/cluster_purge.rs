//! Invalidation across nodes: in a cluster the entry of record lives on the
//! key's owner node, so removing it here is not enough. A PURGE, or an
//! unsafe method that succeeded, on a node that does not own the key also
//! sends a signed `PURGE` to the owner and waits for it (bounded by
//! `peer_timeout`), so the client's next request, on any node, cannot meet
//! the old copy. The owner admits it by its signature instead of
//! `purge_allow`, and never sends it on.

use crate::{
    cache::key::hash_key,
    http::head::{Method, ResponseHead},
    shard::context::ShardContext,
};

use super::cluster::peer_exchange;

/// Removes the entry under `key` on its owner node when that is another
/// node. `Some(removed)`: the owner answered (200: it had the key, 404: it
/// did not); `None`: this node owns the key, or the owner failed (it is
/// then marked down, and its copy lives until it is no longer fresh).
pub(super) async fn purge_on_owner(ctx: &ShardContext, key: &[u8]) -> Option<bool> {
    let cluster = ctx.cluster.as_ref()?;
    let owner = cluster.owner(hash_key(key))?;
    let (host, target) = split_key(key)?;
    let mut out = Vec::with_capacity(160 + key.len());
    out.extend_from_slice(b"PURGE ");
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");
    cluster.sign(&mut out, b"PURGE", target);
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let mut resp = ResponseHead::default();
    let request = (&mut out, Method::Other);
    match peer_exchange(ctx, cluster, request, &mut resp, owner).await {
        // PURGEs are rare: the connection (its small error-page body unread) is closed.
        Ok((conn, _)) => {
            ctx.pool.discard(conn);
            match resp.status {
                200 => Some(true),
                404 => Some(false),
                status => {
                    log::warn!(
                        "shard {}: peer {owner} answered a PURGE with {status}",
                        ctx.id
                    );
                    None
                }
            }
        }
        Err(e) => {
            log::warn!("shard {}: peer {owner}: PURGE: {e}", ctx.id);
            cluster.peer_failed(owner);
            None
        }
    }
}

/// The host and target of a key as `cache::key::write_key` writes it
/// (`G http://host/target`); `None` for any other shape.
fn split_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = key.strip_prefix(b"G http://")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    Some(rest.split_at(slash))
}

#[cfg(test)]
mod tests {
    use super::split_key;
    use crate::cache::key::{write_key, Scheme};

    #[test]
    fn a_key_splits_into_host_and_target() {
        let mut key = Vec::new();
        write_key(&mut key, Scheme::Http, b"Example.com:8080", b"/a/b?c=d");
        assert_eq!(
            split_key(&key),
            Some((&b"example.com:8080"[..], &b"/a/b?c=d"[..]))
        );
        assert_eq!(split_key(b"G http://host"), None);
        assert_eq!(split_key(b"X"), None);
    }
}
