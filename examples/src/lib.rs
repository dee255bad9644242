//! Runnable starting points for wschat users; each example's source opens
//! with what it shows. The README is included here so that its Rust
//! examples run as doc tests and cannot drift from the code.
#![doc = include_str!("../../README.md")]
