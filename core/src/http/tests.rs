use super::*;
use std::sync::mpsc;

#[test]
fn routes() {
    assert_eq!(
        Route::parse("/health", None),
        Some(Route::Health { strict: false })
    );
    assert_eq!(
        Route::parse("/health", Some("strict")),
        Some(Route::Health { strict: true })
    );
    assert_eq!(
        Route::parse("/health", Some("x=1&strict=1")),
        Some(Route::Health { strict: true })
    );
    assert_eq!(
        Route::parse("/health", Some("strict=false")),
        Some(Route::Health { strict: false })
    );
    assert_eq!(
        Route::parse("/metrics", None),
        Some(Route::Metrics(Format::Prometheus))
    );
    assert_eq!(Route::parse("/", None), Some(Route::Dashboard));
    assert_eq!(
        Route::parse("/dashboard.json", None),
        Some(Route::DashboardData)
    );
    assert_eq!(Route::parse("/etc/passwd", None), None);
    assert_eq!(Route::parse("/health/", None), None);
}

#[test]
fn bearer_credentials() {
    assert_eq!(bearer("Bearer abc"), Some("abc"));
    assert_eq!(bearer("bearer  abc "), Some("abc"));
    assert_eq!(bearer("Basic abc"), None);
    assert_eq!(bearer("Bearerabc"), None);
}

#[test]
fn secrets_compare_whole() {
    assert!(same_secret(b"abc", b"abc"));
    assert!(!same_secret(b"abc", b"abd"));
    assert!(!same_secret(b"abc", b"abcd"));
    assert!(!same_secret(b"", b"a"));
}

/// A server on a free loopback port, with a main thread that answers every
/// request with its route, and the log lines it was sent.
fn server(token: Option<&str>) -> (SocketAddr, mpsc::Receiver<String>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (to_main, events) = mpsc::sync_channel(QUEUE);
    let (logs_tx, logs) = mpsc::channel();
    let config = Config {
        listen: port,
        token: Arc::new(Mutex::new(token.map(str::to_string))),
    };
    start(config, to_main, || {}).unwrap();
    std::thread::spawn(move || {
        for e in events {
            match e {
                Event::Request(r) => {
                    let body = format!("{:?}", r.route);
                    r.answer(Answer::text(200, body));
                }
                Event::Log(l) => {
                    let _ = logs_tx.send(l);
                }
            }
        }
    });
    let listening = logs.recv().unwrap();
    assert!(listening.contains("listens on"), "{listening}");
    (port, logs)
}

fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = ureq::get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn requests_reach_the_main_thread_and_come_back() {
    let (addr, _) = server(None);
    let base = format!("http://{addr}");
    assert_eq!(
        get(&format!("{base}/health?strict"), &[]),
        (200, "Health { strict: true }".to_string())
    );
    assert_eq!(
        get(
            &format!("{base}/metrics"),
            &[("Accept", "application/openmetrics-text; version=1.0.0")]
        ),
        (200, "Metrics(OpenMetrics)".to_string())
    );
    assert_eq!(get(&format!("{base}/nothing"), &[]).0, 404);
    let post = ureq::post(&format!("{base}/health")).send_string("x");
    assert!(matches!(post, Err(ureq::Error::Status(405, _))), "{post:?}");
}

#[test]
fn a_token_is_required_when_set() {
    let (addr, _) = server(Some("s3cret"));
    let url = format!("http://{addr}/health");
    assert_eq!(get(&url, &[]).0, 401);
    assert_eq!(get(&url, &[("Authorization", "Bearer wrong")]).0, 401);
    assert_eq!(get(&url, &[("Authorization", "Bearer s3cret")]).0, 200);
    // The dashboard's page holds no data and asks for the token itself.
    let (code, page) = get(&format!("http://{addr}/"), &[]);
    assert_eq!(code, 200);
    assert!(page.contains("<html"), "{page}");
    assert_eq!(get(&format!("http://{addr}/dashboard.json"), &[]).0, 401);
}

#[test]
fn a_taken_port_is_logged_and_tried_again() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (to_main, events) = mpsc::sync_channel(QUEUE);
    let config = Config {
        listen: addr,
        token: Arc::new(Mutex::new(None)),
    };
    start(config, to_main, || {}).unwrap();
    match events.recv().unwrap() {
        Event::Log(l) => assert!(
            l.contains("could not listen") && l.contains("trying again"),
            "{l}"
        ),
        Event::Request(_) => panic!("a request before listening"),
    }
}

#[test]
fn listen_addresses() {
    assert_eq!(parse_listen("8080").unwrap().to_string(), "127.0.0.1:8080");
    assert_eq!(parse_listen(":8080").unwrap().to_string(), "127.0.0.1:8080");
    assert_eq!(
        parse_listen(" 0.0.0.0:80 ").unwrap().to_string(),
        "0.0.0.0:80"
    );
    assert_eq!(
        parse_listen("[::1]:8080").unwrap().to_string(),
        "[::1]:8080"
    );
    assert!(is_loopback(&parse_listen("[::1]:1").unwrap()));
    assert!(!is_loopback(&parse_listen("0.0.0.0:1").unwrap()));
    for bad in ["", "localhost:8080", "127.0.0.1", "127.0.0.1:99999"] {
        let e = parse_listen(bad).unwrap_err();
        assert!(e.contains("is not an address and port"), "{bad}: {e}");
    }
}

#[test]
fn hosts_named_by_address() {
    for ok in [
        "127.0.0.1:8080",
        "127.0.0.1",
        "localhost:80",
        "LOCALHOST",
        "[::1]:8080",
        "10.0.0.5:1",
    ] {
        assert!(host_is_an_address(Some(ok)), "{ok}");
    }
    for bad in [
        "evil.example:8080",
        "evil.example",
        "127.0.0.1.nip.io:80",
        "[evil]:80",
    ] {
        assert!(!host_is_an_address(Some(bad)), "{bad}");
    }
    assert!(!host_is_an_address(None));
}

#[test]
fn the_dashboards_policy_allows_its_own_script_only() {
    let csp = dashboard_csp();
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("script-src 'unsafe-inline'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
}

#[test]
fn a_name_that_is_no_address_is_refused_without_a_token() {
    let (addr, _) = server(None);
    let (code, body) = get(
        &format!("http://{addr}/health"),
        &[("Host", "rebound.example:8080")],
    );
    assert_eq!(code, 421, "{body}");
    assert_eq!(get(&format!("http://{addr}/health"), &[]).0, 200);
}
