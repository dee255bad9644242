//! The load generator and the bare relay, run as `compare.sh` runs them,
//! against the real thing.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};

use support::{Killed, listening_address, server};

/// Runs `wschat-loadgen MODE` with `common` and `args` and `--json`;
/// returns its report. Its stderr is a pipe here, so it must stay quiet:
/// the live progress line is for terminals only (README, Performance).
async fn loadgen(mode: &str, common: &[&str], args: &[&str]) -> serde_json::Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wschat-loadgen"));
    command.arg(mode).args(common).args(args).arg("--json");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "nothing on stderr when piped"
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Checks that a fan-out report saw every message reach every listener.
fn assert_all_delivered(report: &serde_json::Value, listeners: u64) {
    assert!(report["published"].as_u64() > Some(0), "{report}");
    assert_eq!(
        report["deliveries"].as_u64(),
        report["published"].as_u64().map(|p| p * listeners),
        "{report}"
    );
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["out_of_order_or_dup"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_load_generator_measures_each_load() {
    let addr = server(&["--rate", "0"]).await;
    let url = format!("ws://{addr}/");
    let pid = std::process::id().to_string();
    let common = ["--url", &url, "--pid", &pid];

    let fanout = loadgen(
        "fanout",
        &common,
        &[
            "--listeners",
            "20",
            "--publishers",
            "2",
            "--rate",
            "50",
            "--duration",
            "1",
        ],
    )
    .await;
    assert_all_delivered(&fanout, 20);
    assert!(fanout["server_rss_kib"].as_u64() > Some(0), "{fanout}");

    let connect = loadgen(
        "connect",
        &common,
        &["--concurrency", "4", "--duration", "1"],
    )
    .await;
    assert!(connect["handshakes"].as_u64() > Some(0), "{connect}");
    assert_eq!(connect["failed"], 0, "{connect}");
    assert!(
        connect["server_cpu_us_per_handshake"].as_f64() > Some(0.0),
        "{connect}"
    );

    let idle = loadgen("idle", &common, &["--connections", "50", "--hold", "0"]).await;
    assert_eq!(idle["connections"], 50, "{idle}");
    assert!(idle["server_rss_after_kib"].as_u64() > Some(0), "{idle}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_load_generator_measures_tls_handshakes() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = std::env::temp_dir().join(format!("wschat-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    std::fs::write(path("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();

    let addr = server(&[
        "--tls-cert",
        &path("cert.pem"),
        "--tls-key",
        &path("key.pem"),
    ])
    .await;
    let url = format!("wss://{addr}/");
    let pid = std::process::id().to_string();
    let connect = loadgen(
        "connect",
        &["--url", &url, "--pid", &pid],
        &[
            "--tls-ca",
            &path("ca.pem"),
            "--concurrency",
            "4",
            "--duration",
            "1",
        ],
    )
    .await;
    assert_eq!(connect["tls"], true, "{connect}");
    assert!(connect["handshakes"].as_u64() > Some(0), "{connect}");
    assert_eq!(connect["failed"], 0, "{connect}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bare_relay_relays_what_the_load_generator_sends() {
    let mut relay = Killed(
        Command::new(env!("CARGO_BIN_EXE_bare-relay"))
            .arg("127.0.0.1:0")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let url = format!("ws://{}/", listening_address(&mut relay.0));
    let fanout = loadgen(
        "fanout",
        &["--url", &url],
        &[
            "--listeners",
            "10",
            "--publishers",
            "1",
            "--rate",
            "50",
            "--duration",
            "1",
        ],
    )
    .await;
    assert_all_delivered(&fanout, 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_sharing_a_load_publish_together_and_every_listener_gets_all() {
    // As `cluster.sh` runs them: one publisher each, a common start, and
    // the sum of deliveries checked by the caller.
    let addr = server(&["--rate", "0"]).await;
    let url = format!("ws://{addr}/");
    let start_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 3.0;
    let start_at = format!("{start_at:.3}");
    let run = |offset: &'static str| {
        let (url, start_at) = (url.clone(), start_at.clone());
        async move {
            let args = [
                "--listeners",
                "5",
                "--publishers",
                "1",
                "--publisher-offset",
                offset,
                "--total-publishers",
                "2",
                "--rate",
                "10",
                "--duration",
                "1",
                "--drain",
                "2",
                "--start-at",
                &start_at,
                "--latency-histogram",
            ];
            loadgen("fanout", &["--url", &url], &args).await
        }
    };
    let (a, b) = tokio::join!(run("0"), run("1"));
    let published = a["published"].as_u64().unwrap() + b["published"].as_u64().unwrap();
    let deliveries = a["deliveries"].as_u64().unwrap() + b["deliveries"].as_u64().unwrap();
    assert_eq!(deliveries, published * 10, "{a}\n{b}");
    for report in [&a, &b] {
        assert_eq!(report["lost"], 0, "{report}");
        assert_eq!(report["late_start_s"], serde_json::Value::Null, "{report}");
        let counted: u64 = report["latency_histogram_us"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| pair[1].as_u64().unwrap())
            .sum();
        assert_eq!(Some(counted), report["deliveries"].as_u64(), "{report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catch_up_reads_back_an_archive_written_as_the_server_writes_it() {
    let path =
        std::env::temp_dir().join(format!("wschat-bench-catchup-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let file = path.to_str().unwrap();
    let archive = loadgen("archive", &["--out", file], &["--mib", "1", "--size", "50"]).await;
    let messages = archive["messages"].as_u64().unwrap();
    assert!(messages > 5000, "{archive}");

    let addr = server(&["--archive", file]).await;
    let url = format!("ws://{addr}/");
    let pid = std::process::id().to_string();
    let count = messages.to_string();
    let catchup = loadgen(
        "catchup",
        &["--url", &url, "--pid", &pid],
        &["--messages", &count],
    )
    .await;
    std::fs::remove_file(&path).unwrap();
    assert_eq!(catchup["messages"].as_u64(), Some(messages), "{catchup}");
    assert_eq!(
        catchup["gap_notices"], 1,
        "from before the oldest: {catchup}"
    );
    assert_eq!(catchup["out_of_order_or_dup"], 0, "{catchup}");
    assert!(
        catchup["server_rss_peak_kib"].as_u64() > Some(0),
        "{catchup}"
    );
    assert!(
        !catchup["rss_over_time"].as_array().unwrap().is_empty(),
        "{catchup}"
    );
}
