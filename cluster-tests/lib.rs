//! The local cloud and the hostile-input bounds, tested on real `fogbank`
//! processes: see `cluster.rs` and `hostile.rs`. This crate has no code of
//! its own; its harness is `fogbank-testkit`.
