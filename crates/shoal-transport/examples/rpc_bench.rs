//! Shoal RPC against raw tokio TCP on loopback, measured in one run.
//!
//! Four measurements, all with 64-byte payloads on one connection:
//! 1. raw TCP ping-pong: write 64 bytes, read 64 bytes back, one at a time;
//! 2. Shoal RPC round trips, one at a time (an echo method);
//! 3. raw TCP pipelined echo: a writer keeps 64 messages outstanding (one `write` each), a
//!    reader counts echoes; the server echoes whatever it reads;
//! 4. Shoal RPC with 64 requests in flight (64 tasks calling in a loop).
//!
//! Usage: `cargo run --release -p shoal-transport --example rpc_bench -- [--json]
//! [--round-trips N] [--seconds S]`. The last line printed is one JSON object.

use shoal_core::NodeId;
use shoal_transport::{Router, Rpc, RpcClient, RpcServer, RpcTransportExt, TransportConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAYLOAD: usize = 64;
/// Every call's deadline: far above any round trip here, so none times out.
const TIMEOUT: Duration = Duration::from_secs(10);
const IN_FLIGHT: usize = 64;

struct Echo;
impl Rpc for Echo {
    const NAME: &'static str = "bench.echo";
    type Request = Vec<u8>;
    type Response = Vec<u8>;
}

struct Options {
    json_only: bool,
    round_trips: usize,
    seconds: f64,
}

fn options() -> Options {
    let mut options = Options {
        json_only: false,
        round_trips: 20_000,
        seconds: 3.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => options.json_only = true,
            "--round-trips" => {
                options.round_trips = args.next().and_then(|v| v.parse().ok()).unwrap_or(20_000)
            }
            "--seconds" => {
                options.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(3.0)
            }
            other => eprintln!("ignoring unknown argument {other:?}"),
        }
    }
    options
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A raw echo server: reads whatever arrives and writes it back.
async fn raw_echo_server() -> SocketAddr {
    let listener = TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn raw_ping_pong(addr: SocketAddr, round_trips: usize) -> Vec<u64> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let out = [7u8; PAYLOAD];
    let mut back = [0u8; PAYLOAD];
    let mut samples = Vec::with_capacity(round_trips);
    for i in 0..round_trips + round_trips / 10 {
        let started = Instant::now();
        stream.write_all(&out).await.unwrap();
        stream.read_exact(&mut back).await.unwrap();
        if i >= round_trips / 10 {
            samples.push(started.elapsed().as_nanos() as u64);
        }
    }
    samples
}

async fn rpc_round_trips(client: &RpcClient, addr: SocketAddr, round_trips: usize) -> Vec<u64> {
    let payload = vec![7u8; PAYLOAD];
    let mut samples = Vec::with_capacity(round_trips);
    for i in 0..round_trips + round_trips / 10 {
        let started = Instant::now();
        let reply = client.call::<Echo>(addr, &payload, TIMEOUT).await.unwrap();
        assert_eq!(reply.len(), PAYLOAD);
        if i >= round_trips / 10 {
            samples.push(started.elapsed().as_nanos() as u64);
        }
    }
    samples
}

async fn raw_pipelined(addr: SocketAddr, duration: Duration) -> f64 {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let window = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + duration;
    let write_task = {
        let window = Arc::clone(&window);
        tokio::spawn(async move {
            let out = [7u8; PAYLOAD];
            while Instant::now() < stop {
                window.acquire().await.unwrap().forget();
                writer.write_all(&out).await.unwrap();
            }
            writer
        })
    };
    let started = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    let mut bytes = 0usize;
    while Instant::now() < stop {
        let n = reader.read(&mut buf).await.unwrap();
        bytes += n;
        let echoes = bytes / PAYLOAD;
        bytes %= PAYLOAD;
        done.fetch_add(echoes as u64, Ordering::Relaxed);
        window.add_permits(echoes);
    }
    let elapsed = started.elapsed();
    window.add_permits(IN_FLIGHT);
    let _ = write_task.await;
    done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

async fn rpc_pipelined(client: &RpcClient, addr: SocketAddr, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop = started + duration;
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, done) = (client.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let payload = vec![7u8; PAYLOAD];
                while Instant::now() < stop {
                    client.call::<Echo>(addr, &payload, TIMEOUT).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1_000.0
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let duration = Duration::from_secs_f64(options.seconds);
        let raw_addr = raw_echo_server().await;
        let mut router = Router::new();
        router
            .register::<Echo, _, _>(|_, body| async move { Ok(body) })
            .unwrap();
        let config = TransportConfig::default();
        let server = RpcServer::bind(localhost(), NodeId::new(1), router, config.clone())
            .await
            .unwrap();
        let client = RpcClient::new(NodeId::new(2), None, config).unwrap();
        let rpc_addr = server.local_addr();

        // Interleave raw and RPC runs so both see the same machine noise.
        let mut raw = raw_ping_pong(raw_addr, options.round_trips).await;
        let mut rpc = rpc_round_trips(&client, rpc_addr, options.round_trips).await;
        raw.sort_unstable();
        rpc.sort_unstable();
        let raw_rps = raw_pipelined(raw_addr, duration).await;
        let rpc_rps = rpc_pipelined(&client, rpc_addr, duration).await;

        let raw_p50 = percentile_us(&raw, 0.50);
        let raw_p99 = percentile_us(&raw, 0.99);
        let rpc_p50 = percentile_us(&rpc, 0.50);
        let rpc_p99 = percentile_us(&rpc, 0.99);
        let p50_ratio = rpc_p50 / raw_p50;
        let throughput_ratio = rpc_rps / raw_rps;
        if !options.json_only {
            println!("payload {PAYLOAD} B, {} round trips, {IN_FLIGHT} in flight for {:?}", options.round_trips, duration);
            println!("raw tcp ping-pong   p50 {raw_p50:8.1} us   p99 {raw_p99:8.1} us");
            println!("shoal rpc           p50 {rpc_p50:8.1} us   p99 {rpc_p99:8.1} us   (ratio {p50_ratio:.2}, target <= 2.0)");
            println!("raw tcp pipelined   {raw_rps:10.0} req/s");
            println!("shoal rpc pipelined {rpc_rps:10.0} req/s   (ratio {throughput_ratio:.2}, target >= 0.5)");
        }
        println!(
            "{{\"payload_bytes\":{PAYLOAD},\"in_flight\":{IN_FLIGHT},\"round_trips\":{},\
             \"raw_tcp_p50_us\":{raw_p50:.2},\"raw_tcp_p99_us\":{raw_p99:.2},\
             \"rpc_p50_us\":{rpc_p50:.2},\"rpc_p99_us\":{rpc_p99:.2},\
             \"raw_tcp_pipelined_rps\":{raw_rps:.0},\"rpc_pipelined_rps\":{rpc_rps:.0},\
             \"p50_ratio\":{p50_ratio:.3},\"throughput_ratio\":{throughput_ratio:.3}}}",
            options.round_trips
        );
        server.shutdown().await;
    });
}
