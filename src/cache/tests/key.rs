use crate::cache::key::{
    hash_key, method_class, owner_shard, request_key, vary_matches, vary_star, write_key,
    write_vary_key, KeyError, Scheme,
};
use crate::http::head::Method;

use super::{get, req, resp};

fn key(scheme: Scheme, host: &str, target: &str) -> String {
    let mut out = Vec::new();
    write_key(&mut out, scheme, host.as_bytes(), target.as_bytes());
    String::from_utf8(out).unwrap()
}

#[test]
fn primary_key_normalises_host_only() {
    assert_eq!(
        key(Scheme::Http, "Example.COM:80", "/A?b"),
        "G http://example.com/A?b"
    );
    assert_eq!(
        key(Scheme::Http, "example.com:", "/"),
        "G http://example.com/"
    );
    assert_eq!(
        key(Scheme::Http, "example.com:8080", "/"),
        "G http://example.com:8080/"
    );
    assert_eq!(
        key(Scheme::Https, "example.com:443", "/"),
        "G https://example.com/"
    );
    assert_eq!(
        key(Scheme::Https, "example.com:80", "/"),
        "G https://example.com:80/"
    );
    assert_eq!(key(Scheme::Http, "[::1]:80", "/"), "G http://[::1]/");
    assert_ne!(
        key(Scheme::Http, "a", "/x%41"),
        key(Scheme::Http, "a", "/xA")
    );
}

#[test]
fn get_and_head_share_a_key_others_have_none() {
    assert_eq!(method_class(Method::Get), method_class(Method::Head));
    assert_eq!(method_class(Method::Post), None);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let g = get(&[]);
    let h = req("HEAD /x", &[]);
    request_key(&mut a, Scheme::Http, &g.head, &g.buf).unwrap();
    request_key(&mut b, Scheme::Http, &h.head, &h.buf).unwrap();
    assert_eq!(a, b);
    let p = req("POST /x", &["Content-Length: 0"]);
    assert_eq!(
        request_key(&mut a, Scheme::Http, &p.head, &p.buf),
        Err(KeyError::Method)
    );
}

#[test]
fn hash_is_fixed_and_owner_is_uniform() {
    // Same bytes, same hash, in any thread: every shard agrees on the owner.
    let h = hash_key(b"G http://example.com/x");
    let other = std::thread::spawn(|| hash_key(b"G http://example.com/x"))
        .join()
        .unwrap();
    assert_eq!(h, other);
    assert_ne!(h, hash_key(b"G http://example.com/y"));
    assert_eq!(owner_shard(0, 4), 0);
    assert_eq!(owner_shard(u64::MAX, 4), 3);
    assert_eq!(owner_shard(h, 1), 0);
    let shards = 6;
    let mut counts = vec![0usize; shards];
    for i in 0..60_000 {
        counts[owner_shard(hash_key(format!("G http://a/{i}").as_bytes()), shards)] += 1;
    }
    for c in counts {
        assert!((9_000..11_000).contains(&c), "{c}");
    }
}

fn vary_key(resp_fields: &[&str], req_fields: &[&str]) -> Result<Vec<u8>, ()> {
    let r = resp(200, resp_fields);
    let q = get(req_fields);
    let mut out = Vec::new();
    write_vary_key(&mut out, &r.head.fields, &r.buf, &q.head.fields, &q.buf).map_err(|_| ())?;
    Ok(out)
}

#[test]
fn secondary_key_format_and_normalisation() {
    assert_eq!(vary_key(&[], &["Accept: x"]).unwrap(), b"");
    assert_eq!(
        vary_key(
            &["Vary: Accept-Encoding", "vary: X-Absent, Accept"],
            &[
                "accept-encoding:  gzip ,br",
                "Accept-Encoding: zstd",
                "Accept: text/html"
            ]
        )
        .unwrap(),
        b"accept-encoding:gzip,br,zstd\nx-absent\0\naccept:text/html\n"
    );
    assert!(vary_key(&["Vary: Accept, *"], &[]).is_err());
    let r = resp(200, &["Vary: *"]);
    assert!(vary_star(&r.head.fields, &r.buf));
}

#[test]
fn variant_matching() {
    let stored = vary_key(
        &["Vary: Accept-Encoding, X-Absent"],
        &["Accept-Encoding: gzip, br"],
    )
    .unwrap();
    let matches = |fields: &[&str]| {
        let q = get(fields);
        vary_matches(&stored, &q.head.fields, &q.buf)
    };
    assert!(matches(&["Accept-Encoding: gzip, br"]));
    assert!(matches(&["Accept-Encoding:gzip,br"]));
    assert!(matches(&["Accept-Encoding: gzip", "accept-encoding: br"]));
    assert!(!matches(&["Accept-Encoding: br, gzip"]));
    assert!(!matches(&["Accept-Encoding: gzip"]));
    assert!(!matches(&["Accept-Encoding: gzip, br, zstd"]));
    assert!(!matches(&["Accept-Encoding: GZIP, br"]));
    assert!(!matches(&[]));
    // A field absent when stored must be absent now.
    assert!(!matches(&["Accept-Encoding: gzip, br", "X-Absent: 1"]));
    // No Vary: every request matches.
    assert!(vary_matches(
        b"",
        &get(&["A: b"]).head.fields,
        &get(&["A: b"]).buf
    ));
    // Present but empty differs from absent.
    let empty = vary_key(&["Vary: X-E"], &["X-E: "]).unwrap();
    assert_eq!(empty, b"x-e:\n");
    let q = get(&["X-E:"]);
    assert!(vary_matches(&empty, &q.head.fields, &q.buf));
    let q = get(&[]);
    assert!(!vary_matches(&empty, &q.head.fields, &q.buf));
}

#[test]
fn location_keys_same_host_only() {
    use crate::cache::key::location_key;
    let loc = |l: &str| {
        let mut out = Vec::new();
        location_key(&mut out, Scheme::Http, b"Example.com", l.as_bytes())
            .then(|| String::from_utf8(out).unwrap())
    };
    assert_eq!(loc("/a/b?c").as_deref(), Some("G http://example.com/a/b?c"));
    assert_eq!(
        loc("http://EXAMPLE.com:80/z").as_deref(),
        Some("G http://example.com/z")
    );
    assert_eq!(
        loc("http://example.com").as_deref(),
        Some("G http://example.com/")
    );
    assert_eq!(loc("http://other.com/z"), None);
    assert_eq!(loc("https://example.com/z"), None);
    assert_eq!(loc("//example.com/z"), None);
    assert_eq!(loc("z"), None);
}

fn forward_key(target: &str) -> String {
    let raw = format!("GET {target} HTTP/1.0\r\n\r\n");
    let mut head = crate::http::head::RequestHead::default();
    let forms = crate::http::head::AcceptedForms::OriginAndProxy;
    let limits = crate::http::head::Limits {
        max_head_bytes: 16384,
        max_headers: 100,
        max_uri_length: 4096,
    };
    assert!(
        crate::http::head::parse_request_with(raw.as_bytes(), &limits, forms, &mut head).unwrap()
    );
    let mut out = Vec::new();
    crate::cache::key::forward_request_key(&mut out, &head, raw.as_bytes()).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn forward_keys_name_the_destination_apart_from_reverse_keys() {
    assert_eq!(
        forward_key("http://A.example:80/x?y"),
        "F http://a.example/x?y"
    );
    assert_eq!(forward_key("http://a.example"), "F http://a.example/");
    assert_eq!(forward_key("http://a.example?q"), "F http://a.example/?q");
    assert_eq!(
        forward_key("http://a.example:8080/x"),
        "F http://a.example:8080/x"
    );
    // Two destinations' /x never share a key, nor does a reverse request for the same URL.
    assert_ne!(
        forward_key("http://a.example/x"),
        forward_key("http://b.example/x")
    );
    assert_ne!(
        forward_key("http://a.example/x"),
        forward_key("http://a.example:81/x")
    );
    assert_ne!(
        forward_key("http://example.com/x"),
        key(Scheme::Http, "example.com", "/x")
    );
}
