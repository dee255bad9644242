//! The server's integration tests, one binary with a module per concern:
//! the real server on free ports (in this process, or the binary as a
//! child process), real WebSocket clients, a real `redis-server` and a
//! real headless Chromium. One binary links once, not once per file.
//! `cargo test -p wschat-server --test server chat::` runs one module.

mod common;

mod archive;
mod archive_dir;
mod browser;
mod chat;
mod closes;
mod http;
mod jwt;
mod jwt_keys;
mod limits;
mod moderation;
mod process;
mod redis;
mod resume;
mod robustness;
mod tls;
