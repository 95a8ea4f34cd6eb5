// cargo run --release --example webhook_bench -- [N=100000] [WORKERS=64]
//
//! Webhook throughput: N timers due at the same instant, each `POST`ed by
//! the embedded engine's [`WebhookSink`] to a trivial keep-alive HTTP
//! endpoint in this process (std threads, one per connection, answering
//! `200` with an empty body).
//!
//! Prints deliveries per second, counted from the deadline to the last
//! `2xx`, plus the endpoint's request and connection counts and INFO's
//! `delivery_lag_ms`. Endpoint and engine share the machine's cores, so
//! this is a floor for what one timewheel can push into a fast endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use timewheel::Engine;
use timewheel::sink::{WebhookConfig, WebhookSink};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let workers: usize = args.next().map_or(Ok(64), |n| n.parse())?;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/close", listener.local_addr()?);
    let requests = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    {
        let (requests, connections) = (requests.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                connections.fetch_add(1, Ordering::Relaxed);
                let requests = requests.clone();
                std::thread::spawn(move || serve(stream, &requests));
            }
        });
    }

    let sink = WebhookSink::new(WebhookConfig {
        connections: workers,
        ..WebhookConfig::new(url.clone())
    })?;
    let engine = Engine::builder()
        .tick(Duration::from_millis(10))
        .workers(workers)
        .build(sink)
        .expect("build the engine");
    // Far enough ahead that scheduling N timers is over before they fire.
    let due_ms = engine.now_ms() + 2_000 + count / 100;
    for i in 0..count {
        engine
            .schedule_at(format!("o:{i}"), due_ms)
            .and_then(|c| c.wait())?;
    }
    let scheduled_ms = engine.now_ms();
    assert!(scheduled_ms < due_ms, "scheduling overran the deadline");

    let give_up = Instant::now() + Duration::from_secs(600);
    let mut last_stats = engine.stats();
    while last_stats.delivered_total + last_stats.dead_letter_total < count {
        assert!(Instant::now() < give_up, "gave up: {last_stats:?}");
        std::thread::sleep(Duration::from_millis(1));
        last_stats = engine.stats();
    }
    let done_ms = engine.now_ms();
    let elapsed_ms = done_ms.saturating_sub(due_ms).max(1);
    println!("{url}: {count} timers due at once, {workers} workers");
    println!(
        "delivered {} in {} ms after the deadline: {:.0} deliveries/s",
        last_stats.delivered_total,
        elapsed_ms,
        last_stats.delivered_total as f64 * 1000.0 / elapsed_ms as f64
    );
    println!(
        "endpoint saw {} requests on {} connections; retries {}, dead letters {}, delivery_lag_ms (p99) {}",
        requests.load(Ordering::Relaxed),
        connections.load(Ordering::Relaxed),
        last_stats.retries_total,
        last_stats.dead_letter_total,
        last_stats.delivery_lag_ms
    );
    engine.shutdown();
    Ok(())
}

/// Answers every request on one connection with `200` until it closes.
fn serve(stream: TcpStream, requests: &AtomicU64) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::Relaxed);
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
