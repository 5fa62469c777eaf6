//! The harness's own guarantees: parallel clusters do not clash, a dropped
//! cluster is stopped, and the S3 server is a real process that answers S3.
use pg_ark_tests::{Cluster, S3Server};
use std::time::Duration;

#[test]
fn parallel_clusters_get_their_own_port_and_dir() {
    let a = Cluster::start();
    let b = Cluster::start();
    assert_ne!(a.port, b.port);
    assert_ne!(a.data, b.data);
    let pa: i32 = a
        .client()
        .query_one("SELECT current_setting('port')::int", &[])
        .unwrap()
        .get(0);
    let pb: i32 = b
        .client()
        .query_one("SELECT current_setting('port')::int", &[])
        .unwrap()
        .get(0);
    assert_eq!((pa as u16, pb as u16), (a.port, b.port));
}

#[test]
fn a_dropped_cluster_is_stopped_and_removed() {
    let cluster = Cluster::start();
    let pid = cluster.postmaster_pid();
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    // Gone, or a zombie waiting for init to reap it: either way not running
    // (the drop waits for the postmaster's exit, not only for pg_ctl).
    assert!(
        !pg_ark_tests::process_running(pid),
        "postmaster {pid} still running after drop"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn s3_server_is_a_real_process_with_a_bucket() {
    let mut s3 = S3Server::start();
    assert!(s3.is_running());
    // Unsigned requests are refused by the real server's authentication.
    let (status, body) = s3.http("GET", &format!("/{}?list-type=2", s3.bucket));
    assert!(
        status.starts_with("HTTP/1.1 403"),
        "unsigned request: {status}\n{body}"
    );
    assert!(s3.bucket_dir().is_dir());
    // Stop and restart on the same port, as outage tests do.
    s3.stop();
    assert!(std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{}", s3.port).parse().unwrap(),
        Duration::from_millis(500)
    )
    .is_err());
    s3.restart();
    let (status, _) = s3.http("GET", &format!("/{}?list-type=2", s3.bucket));
    assert!(
        status.starts_with("HTTP/1.1 403"),
        "after restart: {status}"
    );
}
