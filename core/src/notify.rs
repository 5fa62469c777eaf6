//! Webhook delivery: one JSON POST with a timeout.
//!
//! The scheduler calls [`post_json`] on a thread of its own (never the
//! backend's), so a slow or dead endpoint can delay only other notifications,
//! never the job queue. Retries are the caller's business: a notification
//! stays in `ark.notifications` until it is delivered or out of attempts.
use std::time::Duration;

/// Check a webhook URL: `http://` or `https://` with a host.
pub fn validate_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("\"{url}\" is not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    Ok(())
}

/// The host (and port) of a webhook URL, without user information, path or
/// query: the only part of the URL an error may name. The URL itself may
/// carry a token, and errors end up in `ark.notifications` (readable by
/// `ark_monitor`) and in the server log.
pub fn url_host(url: &str) -> String {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or("");
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        "(no host)".into()
    } else {
        host.into()
    }
}

/// POST `body` (JSON) to `url`; `Ok(status)` for a 2xx answer, else an error
/// in words (status, refused connection, timeout…) that names the endpoint's
/// host only, never the URL.
pub fn post_json(url: &str, body: &str, timeout: Duration) -> Result<u16, String> {
    let host = url_host(url);
    validate_url(url).map_err(|_| format!("the webhook URL for host {host} is not valid"))?;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(timeout)
        .timeout(timeout)
        .redirects(0)
        .user_agent(concat!("pg_ark/", env!("CARGO_PKG_VERSION")))
        .build();
    match agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(resp) => Ok(resp.status()),
        Err(ureq::Error::Status(code, resp)) => Err(format!(
            "the webhook host {host} answered {code} {}",
            resp.status_text()
        )),
        Err(ureq::Error::Transport(t)) => {
            // The transport error's own text starts with the URL: use its
            // kind and underlying I/O cause only.
            let cause = std::error::Error::source(&t)
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            Err(format!(
                "could not reach the webhook host {host}: {}{cause}",
                t.kind()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    #[test]
    fn urls_are_checked() {
        assert!(validate_url("http://127.0.0.1:9/hook").is_ok());
        assert!(validate_url("https://hooks.example.com/x?y=1").is_ok());
        assert_eq!(
            validate_url("ftp://x").unwrap_err(),
            "\"ftp://x\" is not an http:// or https:// URL"
        );
        assert_eq!(
            validate_url("http:///x").unwrap_err(),
            "\"http:///x\" has no host"
        );
    }

    #[test]
    fn errors_name_the_host_never_the_url() {
        assert_eq!(
            url_host("https://u:pw@hooks.example.com:8443/x?t=1"),
            "hooks.example.com:8443"
        );
        assert_eq!(url_host("http://127.0.0.1:9"), "127.0.0.1:9");
        // A closed port: the error names the host, not the token in the URL.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        for url in [
            format!("http://127.0.0.1:{port}/hook?token=s3cr3t"),
            format!("http://user:s3cr3t@127.0.0.1:{port}/s3cr3t"),
        ] {
            let e = post_json(&url, "{}", Duration::from_secs(30)).unwrap_err();
            assert!(!e.contains("s3cr3t"), "{e}");
            assert!(
                e.starts_with(&format!(
                    "could not reach the webhook host 127.0.0.1:{port}: "
                )),
                "{e}"
            );
        }
        let e = post_json("ftp://user:s3cr3t@x/", "{}", Duration::from_secs(1)).unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    /// A real listener on loopback receives the POST.
    #[test]
    fn posts_json_and_reports_status() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .unwrap();
            (head, String::from_utf8(body).unwrap())
        });
        let code = post_json(
            &format!("http://127.0.0.1:{port}/hook"),
            r#"{"event":"job.failed"}"#,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(code, 204);
        let (head, body) = server.join().unwrap();
        assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
        assert!(head
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        assert_eq!(body, r#"{"event":"job.failed"}"#);
    }

    #[test]
    fn a_dead_endpoint_is_an_error_not_a_hang() {
        // Bind then drop: nothing listens on the port any more.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = post_json(
            &format!("http://127.0.0.1:{port}/"),
            "{}",
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(e.starts_with("could not reach the webhook host"), "{e}");
    }

    #[test]
    fn a_silent_endpoint_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::time::Instant::now();
        let e = post_json(
            &format!("http://127.0.0.1:{port}/"),
            "{}",
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(60), "{e}");
        drop(listener);
    }
}
