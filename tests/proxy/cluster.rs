//! `[cluster]`: shardproxy nodes on loopback sharing one cache. Each node's
//! `self` and `peers` are ports the kernel picked (bound on port 0 first,
//! then released for the node to listen on). One origin counts what it
//! receives, so "the cluster fetched a key once" is "the origin saw one
//! request for it" however the clients spread over the nodes, and
//! concurrent misses on every node. Also: peer signatures (forged, stale,
//! missing → 403; nodes with different secrets refuse and skip each other),
//! responses with a wrong `Content-Digest` from a fake peer (never served;
//! the origin answers), a peer that never answers (`peer_timeout`), a node
//! that dies between or during runs (its keys go to the next owner or the
//! origin), PURGE and unsafe methods reaching the owner node, members from
//! `peers_dns`, and objects too large to store.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::cache::{
    cache_config, method_requests_for, requests_for, scripted_origin, Reply,
};
use crate::support::origin::Origin;
use crate::support::*;

const SECRET: &str = "test-cluster-secret-0123456789";

/// `n` loopback addresses on ports the kernel picked. The listeners are
/// closed again so the nodes can bind them; the kernel does not hand a port
/// it just assigned to the next port-0 bind, so the window is harmless.
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding port 0"))
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn quoted_list(addrs: &[SocketAddr]) -> String {
    let items: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", items.join(", "))
}

/// A cache node listening on `me`, in a cluster with `members` (itself
/// included: one list for every node, as a shared config file would have).
fn node_config(
    shards: usize,
    origin: &Origin,
    me: SocketAddr,
    members: &[SocketAddr],
) -> ProxyConfig {
    cache_config(shards, origin, &[])
        .set("server", "listen", &format!("[\"{me}\"]"))
        .set("cluster", "self", &format!("\"{me}\""))
        .set("cluster", "peers", &quoted_list(members))
        .set("cluster", "secret", &format!("{SECRET:?}"))
}

/// Three nodes in front of `origin`.
fn three_nodes(shards: usize, origin: &Origin) -> (Vec<Proxy>, Vec<SocketAddr>) {
    let addrs = free_addrs(3);
    let nodes = addrs
        .iter()
        .map(|me| Proxy::start(&node_config(shards, origin, *me, &addrs)))
        .collect();
    (nodes, addrs)
}

/// An origin whose every answer is cacheable for a minute, body = target.
fn cacheable_origin() -> Origin {
    scripted_origin(|request, _| {
        Reply::ok(format!("body of {}", request.target)).cache_control("max-age=60")
    })
}

#[test]
fn each_key_is_fetched_from_the_origin_once_however_clients_spread() {
    for_each_shard_count(|shards| {
        let origin = cacheable_origin();
        let (nodes, _) = three_nodes(shards, &origin);
        let keys = 12;
        let mut from_peer = 0;
        for round in 0..3 {
            for key in 0..keys {
                let node = &nodes[(key + round) % nodes.len()];
                let target = format!("/k{key}");
                let response = node.client().get(&target);
                assert_status(&response, 200);
                assert_eq!(response.body_text(), format!("body of {target}"));
                // The owner's Cache-Status member comes first, this node's after.
                let head = String::from_utf8_lossy(&response.head.raw);
                from_peer += usize::from(head.contains("detail=peer"));
            }
        }
        for key in 0..keys {
            let target = format!("/k{key}");
            assert_eq!(
                requests_for(&origin, &target),
                1,
                "origin requests for {target}"
            );
        }
        // 36 requests on 3 nodes: about two thirds land on a node that does
        // not own the key.
        assert!(from_peer >= 12, "only {from_peer} answers came from a peer");
    });
}

#[test]
fn concurrent_misses_on_every_node_make_one_origin_fetch() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let held = Arc::clone(&gate);
        let origin = Origin::start(move |request, stream| {
            held.wait();
            Reply::ok("hot")
                .cache_control("max-age=60")
                .send(request, stream)
        });
        let (nodes, _) = three_nodes(shards, &origin);
        let clients: Vec<_> = nodes
            .iter()
            .flat_map(|node| [node.addr(), node.addr()])
            .map(|addr| thread::spawn(move || Client::connect(addr).get("/hot")))
            .collect();
        origin.wait_for_heads(1);
        // Whatever arrives later is a hit, so this pause only gives the
        // other requests time to be in flight while the fetch is held.
        thread::sleep(Duration::from_millis(300));
        gate.open();
        for client in clients {
            let response = client.join().unwrap();
            assert_status(&response, 200);
            assert_eq!(response.body_text(), "hot");
        }
        assert_eq!(origin.heads(), 1, "origin fetches of one hot key");
    });
}

/// GETs `target` on every node and checks the answer.
fn get_everywhere(nodes: &[Proxy], target: &str) {
    for node in nodes {
        let response = node.client().get(target);
        assert_status(&response, 200);
        assert_eq!(response.body_text(), format!("body of {target}"));
    }
}

#[test]
fn a_purge_on_any_node_removes_the_owner_s_copy() {
    for_each_shard_count(|shards| invalidate_through_every_node(shards, "PURGE"));
}

#[test]
fn an_unsafe_method_on_any_node_invalidates_the_owner_s_copy() {
    for_each_shard_count(|shards| invalidate_through_every_node(shards, "DELETE"));
}

/// Caches six keys, sends `method` for each through nodes 0, 1, 2, 0, ...
/// (so some through a node that does not own the key: all six owned by the
/// node they go through has odds 1/729), then checks every key is fetched
/// from the origin exactly once more, wherever it is asked for.
fn invalidate_through_every_node(shards: usize, method: &str) {
    let origin = cacheable_origin();
    let (nodes, _) = three_nodes(shards, &origin);
    let targets: Vec<String> = (0..6).map(|key| format!("/{method}{key}")).collect();
    for target in &targets {
        get_everywhere(&nodes, target);
    }
    for (i, target) in targets.iter().enumerate() {
        let response = nodes[i % nodes.len()].client().request(method, target);
        assert_status(&response, 200);
    }
    for target in &targets {
        get_everywhere(&nodes, target);
        assert_eq!(
            method_requests_for(&origin, "GET", target),
            2,
            "{target}: fetched again once after {method}"
        );
    }
}

/// A `Shardproxy-Peer` value signed with `secret` at `time` by `sender`.
fn peer_field(secret: &str, target: &str, time: u64, sender: &str) -> String {
    let mut line = Vec::new();
    shardproxy::cluster::sign::write_field(
        &mut line,
        secret.as_bytes(),
        b"GET",
        target.as_bytes(),
        time,
        sender,
    );
    let line = String::from_utf8(line).unwrap();
    line["Shardproxy-Peer: ".len()..line.len() - 2].to_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn peer_requests_with_a_bad_signature_are_refused_with_403() {
    for_each_shard_count(|shards| {
        let origin = cacheable_origin();
        let me = free_addrs(1)[0];
        let mut node = Proxy::start(&node_config(shards, &origin, me, &[me]));
        let now = unix_now();
        let sender = "127.0.0.1:1";
        let good = peer_field(SECRET, "/signed", now, sender);
        let cases = [
            (
                "forged",
                peer_field("another-secret-of-some-length", "/signed", now, sender),
            ),
            ("stale", peer_field(SECRET, "/signed", now - 3600, sender)),
            ("future", peer_field(SECRET, "/signed", now + 3600, sender)),
            ("another target", peer_field(SECRET, "/other", now, sender)),
            ("no signature", format!("{now} {sender}")),
            ("empty", String::new()),
        ];
        for (name, value) in &cases {
            let response =
                node.client()
                    .request_with("GET", "/signed", &[("Shardproxy-Peer", value)]);
            assert_eq!(response.status, 403, "{name}: {}", response.body_text());
        }
        assert_eq!(
            requests_for(&origin, "/signed"),
            0,
            "a refused request reached the origin"
        );
        // The right signature is served, with the body's digest.
        let response = node
            .client()
            .request_with("GET", "/signed", &[("Shardproxy-Peer", &good)]);
        assert_status(&response, 200);
        let digest = response
            .header("content-digest")
            .expect("a Content-Digest for a peer");
        assert!(
            shardproxy::cluster::digest::matches(digest.as_bytes(), &response.body),
            "Content-Digest {digest} does not match the body"
        );
        node.send_sigterm();
        node.wait_for_exit(Duration::from_secs(10));
        let log = node.output();
        assert!(
            log.contains("refused a peer request"),
            "refusals are logged:\n{log}"
        );
        assert_eq!(counted(&log, "signature rejections "), cases.len(), "{log}");
        assert_eq!(counted(&log, "received "), 1, "{log}");
    });
}

#[test]
fn a_node_with_another_secret_is_refused_and_marked_down() {
    for_each_shard_count(|shards| {
        let origin = cacheable_origin();
        let addrs = free_addrs(2);
        let (a, b) = (addrs[0], addrs[1]);
        let node_a = Proxy::start(&node_config(shards, &origin, a, &addrs));
        let other_secret = node_config(shards, &origin, b, &addrs).set(
            "cluster",
            "secret",
            "\"not-the-secret-of-the-others\"",
        );
        let node_b = Proxy::start(&other_secret);
        // 16 keys: both nodes own some unless 2^-15 bad luck with the ports.
        let keys = 16;
        for key in 0..keys {
            let target = format!("/x{key}");
            for node in [&node_a, &node_b] {
                let response = node.client().get(&target);
                assert_status(&response, 200);
                assert_eq!(response.body_text(), format!("body of {target}"));
            }
        }
        for node in [&node_a, &node_b] {
            let log = node.output();
            assert!(log.contains("refused our signature"), "{log}");
            assert!(log.contains("marked down"), "{log}");
        }
    });
}

/// The sum over the shards' `cluster:` counter lines of the number after `label`.
fn counted(log: &str, label: &str) -> usize {
    log.lines()
        .filter_map(|line| line.split_once(" cluster: ").map(|(_, counters)| counters))
        .filter_map(|counters| counters.split_once(label))
        .map(|(_, rest)| {
            rest.split_whitespace()
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum()
}

#[test]
fn a_peer_answer_with_a_wrong_digest_is_not_served_or_stored() {
    for_each_shard_count(|shards| {
        let origin = cacheable_origin();
        let fake_peer = Origin::start(|request, stream| {
            Reply::ok("forged body")
                .cache_control("max-age=60")
                .header(
                    "Content-Digest",
                    "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
                )
                .send(request, stream)
        });
        let me = free_addrs(1)[0];
        let members = [me, fake_peer.addr()];
        let mut node = Proxy::start(&node_config(shards, &origin, me, &members));
        let keys = 16;
        for round in 0..2 {
            for key in 0..keys {
                let target = format!("/d{key}");
                let response = node.client().get(&target);
                assert_status(&response, 200);
                assert_eq!(
                    response.body_text(),
                    format!("body of {target}"),
                    "round {round}"
                );
            }
        }
        assert!(
            fake_peer.request_count() > 0,
            "no key was owned by the fake peer"
        );
        for key in 0..keys {
            // Fetched once from the origin: the node stored the origin's
            // answer after refusing the peer's, and served it the second time.
            assert_eq!(requests_for(&origin, &format!("/d{key}")), 1);
        }
        node.send_sigterm();
        node.wait_for_exit(Duration::from_secs(10));
        let log = node.output();
        let mismatches = counted(&log, "digest mismatches ");
        assert_eq!(mismatches, fake_peer.request_count(), "{log}");
        assert!(
            log.contains("Content-Digest"),
            "the mismatch is logged:\n{log}"
        );
    });
}

#[test]
fn a_dead_node_s_keys_are_served_by_the_others() {
    for_each_shard_count(|shards| {
        let origin = cacheable_origin();
        let (mut nodes, _) = three_nodes(shards, &origin);
        // Owners depend on the ports the kernel picked: with 30 keys the
        // chance that the dead node owns none is (2/3)^30, 5 in a million.
        let keys = 30;
        for key in 0..keys {
            assert_status(&nodes[0].client().get(&format!("/n{key}")), 200);
        }
        drop(nodes.pop());
        for node in &nodes {
            for key in 0..keys {
                let target = format!("/n{key}");
                let response = node.client().get(&target);
                assert_status(&response, 200);
                assert_eq!(response.body_text(), format!("body of {target}"));
            }
        }
        let refetched = (0..keys)
            .filter(|key| requests_for(&origin, &format!("/n{key}")) > 1)
            .count();
        assert!(refetched > 0, "no key was owned by the dead node");
        assert!(refetched < keys, "the live nodes' keys were fetched again");
        for key in 0..keys {
            let count = requests_for(&origin, &format!("/n{key}"));
            assert!(count <= 1 + shards * 2, "/n{key} fetched {count} times");
        }
    });
}

/// Polls `node`'s log until it contains `text`; panics after 10 s.
fn wait_for_log(node: &Proxy, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !node.output().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {text:?} in the log:\n{}",
            node.output()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn members_from_peers_dns_share_the_keys() {
    for_each_shard_count(|shards| {
        let origin = cacheable_origin();
        let addrs = free_addrs(2);
        let (a, b) = (addrs[0], addrs[1]);
        // Node a learns b only from DNS (`localhost` resolves to 127.0.0.1).
        let dns_name = format!("localhost:{}", b.port());
        let node_a = Proxy::start(&node_config(shards, &origin, a, &[a]).set(
            "cluster",
            "peers_dns",
            &format!("{dns_name:?}"),
        ));
        let node_b = Proxy::start(&node_config(shards, &origin, b, &addrs));
        wait_for_log(&node_a, &format!("members from {dns_name}"));
        let keys = 12;
        for key in 0..keys {
            for node in [&node_a, &node_b] {
                assert_status(&node.client().get(&format!("/s{key}")), 200);
            }
        }
        for key in 0..keys {
            assert_eq!(requests_for(&origin, &format!("/s{key}")), 1, "/s{key}");
        }
    });
}

#[test]
fn a_peer_that_never_answers_is_marked_down_and_its_keys_fetched_locally() {
    for_each_shard_count(|shards| {
        let origin = cacheable_origin();
        // Accepts connections (the kernel's backlog does) and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let me = free_addrs(1)[0];
        let members = [me, silent.local_addr().unwrap()];
        let config = node_config(shards, &origin, me, &members)
            .set("cluster", "peer_timeout", "\"300ms\"")
            .set("cluster", "peer_backoff", "\"60s\"");
        let node = Proxy::start(&config);
        let keys = 16;
        for key in 0..keys {
            let target = format!("/t{key}");
            let response = node.client().get(&target);
            assert_status(&response, 200);
            assert_eq!(response.body_text(), format!("body of {target}"));
        }
        let log = node.output();
        let marks = log.matches("marked down").count();
        // Each shard waits for the silent peer once, then skips it.
        assert!((1..=shards).contains(&marks), "{marks} down marks:\n{log}");
        for key in 0..keys {
            assert_eq!(requests_for(&origin, &format!("/t{key}")), 1);
        }
    });
}

#[test]
fn a_node_killed_mid_run_costs_the_other_nodes_clients_nothing() {
    for_each_shard_count(|shards| {
        let origin = cacheable_origin();
        let (mut nodes, _) = three_nodes(shards, &origin);
        let survivors: Vec<SocketAddr> = nodes[..2].iter().map(Proxy::addr).collect();
        let killed = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (addr, killed) = (survivors[c % 2], Arc::clone(&killed));
                thread::spawn(move || {
                    // Requests until the kill and 40 after it (bounded either way).
                    let (mut failures, mut after_kill) = (Vec::new(), 0);
                    for i in 0..20_000 {
                        if killed.load(Ordering::Relaxed) {
                            after_kill += 1;
                            if after_kill > 40 {
                                break;
                            }
                        }
                        let target = format!("/m{}", (i * 7 + c) % 20);
                        match Client::connect(addr).try_get(&target) {
                            Ok(r)
                                if r.status == 200
                                    && r.body_text() == format!("body of {target}") => {}
                            other => failures.push(format!("{target}: {other:?}")),
                        }
                    }
                    (failures, after_kill)
                })
            })
            .collect();
        // Kill the third node once the run is under way.
        origin.wait_for_requests(5);
        drop(nodes.pop());
        killed.store(true, Ordering::Relaxed);
        for client in clients {
            let (failures, after_kill) = client.join().unwrap();
            assert!(failures.is_empty(), "requests failed: {failures:#?}");
            assert!(after_kill > 40, "the run ended before the kill");
        }
    });
}

#[test]
fn objects_too_large_to_store_are_still_served_on_every_node() {
    for_each_shard_count(|shards| {
        let body = crate::support::cache::pattern(7, 300 * 1024);
        let served = body.clone();
        let origin = scripted_origin(move |_, _| {
            Reply::ok(served.clone())
                .cache_control("max-age=60")
                .chunked()
        });
        let addrs = free_addrs(3);
        let nodes: Vec<Proxy> = addrs
            .iter()
            .map(|me| {
                let config =
                    node_config(shards, &origin, *me, &addrs).cache("max_object_size", "\"64KiB\"");
                Proxy::start(&config)
            })
            .collect();
        for key in 0..6 {
            for node in &nodes {
                let response = node.client().get(&format!("/big{key}"));
                assert_status(&response, 200);
                assert!(response.body == body, "/big{key}: wrong body");
            }
        }
    });
}

/// The cluster's counters are on each node's `/metrics`: what the nodes
/// sent to owners and received from each other adds up, every member is up.
#[test]
fn cluster_counters_are_exported_on_metrics() {
    for_each_shard_count(|shards| {
        let origin = cacheable_origin();
        // The admin ports are reserved with the nodes' own: an admin endpoint
        // on port 0, bound before its node's listeners, could be handed a
        // node's address the moment `free_addrs` let go of it (seen in CI).
        let reserved = free_addrs(6);
        let (addrs, admins) = reserved.split_at(3);
        let nodes: Vec<Proxy> = addrs
            .iter()
            .zip(admins)
            .map(|(me, admin)| {
                let config = node_config(shards, &origin, *me, addrs).set(
                    "admin",
                    "listen",
                    &format!("\"{admin}\""),
                );
                Proxy::start(&config)
            })
            .collect();
        for key in 0..12 {
            for node in &nodes {
                assert_status(&node.client().get(&format!("/m{key}")), 200);
            }
        }
        let pages: Vec<_> = nodes
            .iter()
            .map(|node| {
                let (status, text) = node.admin("GET", "/metrics");
                assert_eq!(status, 200);
                crate::support::prometheus::parse(&text).expect("/metrics parses")
            })
            .collect();
        let total = |name: &str| pages.iter().map(|p| p.sum(name, &[])).sum::<f64>();
        let sent = total("shardproxy_cluster_peer_requests_sent_total");
        // 36 requests, each key owned by one of three nodes: 24 asked another node.
        assert_eq!(sent, 24.0, "peer requests sent");
        assert_eq!(
            total("shardproxy_cluster_peer_requests_received_total"),
            sent
        );
        assert_eq!(total("shardproxy_cluster_peer_answers_total"), sent);
        assert_eq!(total("shardproxy_cluster_signature_rejections_total"), 0.0);
        for page in &pages {
            assert_eq!(
                page.sum("shardproxy_cluster_members_up", &[]),
                3.0 * shards as f64
            );
        }
    });
}

/// A HEAD miss is filled like a GET (issue 12), and in a cluster by the
/// key's owner: HEAD on any node, then GET on every node, and the origin
/// sees each key once.
#[test]
fn head_misses_are_fetched_by_the_owner_too() {
    for_each_shard_count(|shards| {
        let origin = cacheable_origin();
        let (nodes, _) = three_nodes(shards, &origin);
        for key in 0..9 {
            let target = format!("/h{key}");
            let head = nodes[key % 3].client().request("HEAD", &target);
            assert_status(&head, 200);
            for node in &nodes {
                let response = node.client().get(&target);
                assert_status(&response, 200);
                assert_eq!(response.body_text(), format!("body of {target}"));
            }
            assert_eq!(
                requests_for(&origin, &target),
                1,
                "origin requests for {target}"
            );
        }
    });
}
