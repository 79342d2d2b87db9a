//! Load shedding at the shard: `server.tuning.max_inflight` caps the
//! requests one shard handles at once, and the lowest priority classes are
//! shed first as the shard fills. A request of class `c` (0 lowest, 7
//! highest) is admitted while the shard has fewer than
//! `max_inflight × (25 + c) / 32` requests in flight: class 7 may use all of
//! it, class 0 about 78 %, each class in between a little more than the one
//! below. So under overload the low classes get 503 + Retry-After while the
//! headroom above them stays for the high ones. Per shard: a `Cell` count,
//! no cross-core traffic.

use std::cell::Cell;

use super::error::ProxyError;

/// Shares of `max_inflight` in 32nds: class `c` gets `BASE_SHARE + c`.
const BASE_SHARE: usize = 25;
const SHARES: usize = 32;

/// One admitted request; the count goes down when it is dropped.
pub struct Admitted<'a>(&'a Cell<usize>);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// The most requests in flight at which class `class` is still admitted.
fn limit(max_inflight: usize, class: u8) -> usize {
    (max_inflight * (BASE_SHARE + usize::from(class).min(7)) / SHARES).max(1)
}

/// Admits a request of class `class` if the shard's `in_flight` count is
/// under its class's limit (`max_inflight` 0: always).
pub fn admit(
    in_flight: &Cell<usize>,
    max_inflight: usize,
    class: u8,
) -> Result<Admitted<'_>, ProxyError> {
    if max_inflight != 0 && in_flight.get() >= limit(max_inflight, class) {
        return Err(ProxyError::Shed);
    }
    in_flight.set(in_flight.get() + 1);
    Ok(Admitted(in_flight))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_classes_get_more_of_the_shard() {
        assert_eq!(limit(32, 0), 25);
        assert_eq!(limit(32, 7), 32);
        assert_eq!(limit(8, 0), 6);
        assert_eq!(limit(8, 7), 8);
        assert_eq!(limit(1, 0), 1, "a tiny limit still admits one");
        let in_flight = Cell::new(0);
        let admitted: Vec<_> = (0..6).map(|_| admit(&in_flight, 8, 0).unwrap()).collect();
        assert!(admit(&in_flight, 8, 0).is_err(), "class 0 stops at 6 of 8");
        let high = admit(&in_flight, 8, 7).expect("class 7 still gets in");
        drop((admitted, high));
        assert_eq!(in_flight.get(), 0);
        assert!(admit(&in_flight, 0, 0).is_ok(), "0 means no limit");
    }
}
