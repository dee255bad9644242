//! Helpers the tests of the examples and of the benchmark package share:
//! a real server in the test's process, and children that are killed when
//! the test ends.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Child;

use tokio::net::TcpListener;

/// A wschat server in this process; dropped with the test's runtime.
pub async fn server(args: &[&str]) -> SocketAddr {
    server_until(args, std::future::pending()).await
}

/// A wschat server in this process that shuts down (as on SIGTERM) when
/// `shutdown` resolves.
pub async fn server_until(
    args: &[&str],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> SocketAddr {
    let config = wschat_server::Config::from_args(args).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(wschat_server::run(listener, config, shutdown));
    addr
}

/// Kills the child when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address in the first line a child prints on stderr
/// (`listening on ADDR`).
pub fn listening_address(child: &mut Child) -> String {
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    first
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned()
}
