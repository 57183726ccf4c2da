//! Prometheus metrics after some traffic: the counters move.

mod common;

use common::{request, TestServer, SUB1};
use rampart::server::metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    text
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_with_traffic() {
    let s = TestServer::rules().await;
    let addr = metrics::start("127.0.0.1:0".parse().unwrap(), s.broker.clone())
        .await
        .unwrap();
    let before = scrape(addr).await;
    for _ in 0..3 {
        s.authorize(
            "mg-reader",
            "Microsoft.Compute/virtualMachines/read",
            SUB1,
            false,
        )
        .await;
    }
    s.authorize(
        "mg-reader",
        "Microsoft.Compute/virtualMachines/delete",
        SUB1,
        false,
    )
    .await;
    let _ = s.try_authorize(request("", "a/b/c", SUB1, false)).await;
    let after = scrape(addr).await;
    let allow = "rampart_decisions_total{decision=\"ALLOW\",reason=\"ROLE_ASSIGNMENT\"}";
    let deny = "rampart_decisions_total{decision=\"DENY\",reason=\"NO_MATCHING_ASSIGNMENT\"}";
    assert_eq!(value(&after, allow) - value(&before, allow), 3.0, "{after}");
    assert_eq!(value(&after, deny) - value(&before, deny), 1.0, "{after}");
    assert_eq!(
        value(&after, "rampart_invalid_requests_total")
            - value(&before, "rampart_invalid_requests_total"),
        1.0
    );
    assert!(value(&after, "rampart_decision_duration_seconds_count") >= 4.0);
    assert!(value(&after, "rampart_cache_entries") >= 1.0);
    assert!(value(&after, "rampart_cache_hit_ratio") > 0.0);
    assert!(after.contains("rampart_snapshot_info{revision=\"rules-1\"} 1"));
    assert!(after.contains("rampart_elevations_pending 0"));
    assert!(after.contains("# TYPE rampart_decision_duration_seconds histogram"));
    s.stop().await;
}

/// A flood of idle connections takes every slot: the next connection is
/// closed at once instead of holding another task and descriptor, and once
/// the idle ones go, scrapes are answered again.
#[tokio::test]
async fn idle_connections_cannot_hold_more_than_their_share() {
    let s = TestServer::rules().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = metrics::ScrapeLimits {
        max_connections: 4,
        // Far longer than the test: the idle connections keep their slots.
        timeout: std::time::Duration::from_secs(600),
    };
    let server = tokio::spawn(metrics::serve_within(listener, s.broker.clone(), limits));

    // Connections are accepted in the order they were made, each taking
    // its slot before the next is accepted: these four hold every slot.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }

    let mut refused = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = refused.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
    let mut text = String::new();
    let _ = refused.read_to_string(&mut text).await;
    assert_eq!(text, "", "a connection beyond the cap is closed unanswered");

    drop(idle);
    // Slots come back as the server sees the idle connections close.
    let mut answered = false;
    for _ in 0..1000 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text).await;
        if text.starts_with("HTTP/1.1 200 OK") {
            answered = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        answered,
        "scrapes are answered once the idle connections are gone"
    );
    server.abort();
    s.stop().await;
}
