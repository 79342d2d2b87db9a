//! Criterion benchmarks of the cache's hot paths: key building and hashing,
//! a store hit (lookup with Vary matching), and an insert that evicts.
fn main() {}
