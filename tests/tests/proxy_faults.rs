//! The fault-injecting proxy itself, against a plain TCP upstream: each fault does what the
//! client scenarios rely on. Time figures are lower bounds that pacing guarantees, never
//! upper bounds on speed.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use quire_tests::proxy::{Direction, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(10);

/// A proxy in front of a fresh upstream listener, with one connection through it: returns
/// the proxy, the client's end and the upstream's end, after a round trip proved the path.
async fn connected() -> (Proxy, TcpStream, TcpStream) {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start(upstream.local_addr().unwrap()).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut server, _) = upstream.accept().await.unwrap();
    client.write_all(b"ping").await.unwrap();
    assert_eq!(&read_exact(&mut server, 4).await, b"ping");
    server.write_all(b"pong").await.unwrap();
    assert_eq!(&read_exact(&mut client, 4).await, b"pong");
    (proxy, client, server)
}

async fn read_exact(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut buf))
        .await
        .expect("bytes in time")
        .expect("reading");
    buf
}

/// Reads until EOF or an error; returns the bytes and the error kind, if any.
async fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, Option<ErrorKind>) {
    let mut out = Vec::new();
    let result = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out))
        .await
        .expect("the connection to end in time");
    (out, result.err().map(|e| e.kind()))
}

#[tokio::test]
async fn records_each_accepted_connection() {
    let (proxy, _client, _server) = connected().await;
    let _second = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.until_accepted(2, DEADLINE).await;
    let accepted = proxy.accepted();
    assert!(accepted[0] <= accepted[1]);
}

#[tokio::test]
async fn reset_reaches_both_ends_as_rst() {
    let (proxy, mut client, mut server) = connected().await;
    proxy.reset_all();
    assert_eq!(
        read_to_end(&mut client).await.1,
        Some(ErrorKind::ConnectionReset)
    );
    assert_eq!(
        read_to_end(&mut server).await.1,
        Some(ErrorKind::ConnectionReset)
    );
}

#[tokio::test]
async fn a_cut_forwards_part_of_a_chunk_then_closes() {
    let (proxy, mut client, mut server) = connected().await;
    proxy.cut_next_chunk(Direction::ToClient);
    server.write_all(&[7; 1000]).await.unwrap();
    let (received, error) = read_to_end(&mut client).await;
    assert_eq!(error, None, "a cut closes with FIN, not RST");
    assert!(
        !received.is_empty() && received.len() < 1000,
        "{} bytes",
        received.len()
    );
    assert!(!proxy.cut_pending(Direction::ToClient));
    // The upstream side is closed as well.
    assert_eq!(read_to_end(&mut server).await.0, b"");
}

#[tokio::test]
async fn a_stall_holds_bytes_without_closing_until_resumed() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start(upstream.local_addr().unwrap()).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut server, _) = upstream.accept().await.unwrap();
    proxy.stall();
    client.write_all(b"held").await.unwrap();
    server.write_all(b"back").await.unwrap();
    // Not a wait for a condition: nothing may arrive during this window.
    let window = Duration::from_millis(300);
    let mut byte = [0u8; 1];
    assert!(tokio::time::timeout(window, server.read(&mut byte))
        .await
        .is_err());
    assert!(tokio::time::timeout(window, client.read(&mut byte))
        .await
        .is_err());
    // New connections stall too.
    let mut late = TcpStream::connect(proxy.addr).await.unwrap();
    late.write_all(b"late").await.unwrap();
    proxy.resume();
    assert_eq!(&read_exact(&mut server, 4).await, b"held");
    assert_eq!(&read_exact(&mut client, 4).await, b"back");
    let (mut late_server, _) = upstream.accept().await.unwrap();
    assert_eq!(&read_exact(&mut late_server, 4).await, b"late");
}

#[tokio::test]
async fn stall_existing_lets_new_connections_pass() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start(upstream.local_addr().unwrap()).await;
    let _old = TcpStream::connect(proxy.addr).await.unwrap();
    proxy.until_accepted(1, DEADLINE).await;
    proxy.stall_existing();
    let mut new = TcpStream::connect(proxy.addr).await.unwrap();
    new.write_all(b"new").await.unwrap();
    let (_, _) = upstream.accept().await.unwrap();
    let (mut server, _) = upstream.accept().await.unwrap();
    assert_eq!(&read_exact(&mut server, 3).await, b"new");
}

#[tokio::test]
async fn throttle_paces_each_direction() {
    let (proxy, mut client, mut server) = connected().await;
    let rate = 100_000;
    proxy.set_throttle(Some(rate));
    let started = Instant::now();
    server.write_all(&[1; 50_000]).await.unwrap();
    read_exact(&mut client, 50_000).await;
    let took = started.elapsed();
    // 50 kB at 100 kB/s: at least about half a second (the first piece goes at once).
    assert!(took >= Duration::from_millis(450), "{took:?}");
    eprintln!("50 kB at {rate} B/s took {took:?}");
}

#[tokio::test]
async fn delay_holds_every_chunk_back() {
    let (proxy, mut client, mut server) = connected().await;
    let delay = Duration::from_millis(100);
    proxy.set_delay(delay);
    let started = Instant::now();
    client.write_all(b"there").await.unwrap();
    read_exact(&mut server, 5).await;
    server.write_all(b"back").await.unwrap();
    read_exact(&mut client, 4).await;
    let took = started.elapsed();
    assert!(took >= delay * 2, "{took:?}");
}
