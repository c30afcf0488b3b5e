//! Cost of a cache hit of `Broker::token` inside the process, next to a baseline measured in
//! the same run (cloning an `Arc<str>`), printed as ns/op and as a ratio.
//!
//! The IdP here is a minimal loopback HTTP responder (discovery + one token answer): it is hit
//! exactly once to fill the cache; every measured call is a cache hit. Run with
//! `cargo bench -p stagepass --bench cache_hit`. Target: under 2 us per hit.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

fn fake_idp() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    let issuer = base.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut reader = BufReader::new(match s.try_clone() {
                Ok(c) => c,
                Err(_) => continue,
            });
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let json = if line.starts_with("GET /.well-known/openid-configuration") {
                format!(r#"{{"issuer":"{issuer}","token_endpoint":"{issuer}/token"}}"#)
            } else {
                r#"{"access_token":"bench-token","token_type":"Bearer","expires_in":3600}"#.into()
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                json.len()
            );
        }
    });
    Ok(base)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = fake_idp()?;
    let tmp = std::env::temp_dir().join(format!("stagepass-bench-{}", std::process::id()));
    let secret_file = tmp.join("secret");
    std::fs::create_dir_all(&tmp)?;
    std::fs::write(&secret_file, "bench-secret")?;
    let toml = format!(
        "[store]\nbackend = \"file\"\n[profiles.p]\ngrant = \"client-credentials\"\nissuer = \"{issuer}\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"\n",
        secret_file.display()
    );
    let config: stagepass::config::Config = toml::from_str(&toml)?;
    let paths = stagepass::paths::Paths {
        config_files: vec![],
        state_dir: tmp.join("state"),
        runtime_dir: tmp.join("run"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let n: u32 = 200_000;
    let (hit_ns, base_ns) = rt.block_on(async {
        let broker = stagepass::broker::Broker::start(&config, &paths).await?;
        let req = stagepass::broker::TokenRequest::default();
        broker.token("p", req).await?; // fills the cache (the only IdP call)
        for _ in 0..10_000 {
            black_box(broker.token("p", req).await?);
        }
        let t = Instant::now();
        for _ in 0..n {
            black_box(broker.token(black_box("p"), req).await?);
        }
        let hit = t.elapsed().as_nanos() as f64 / f64::from(n);

        let s: Arc<str> = Arc::from("baseline");
        let t = Instant::now();
        for _ in 0..n {
            black_box(Arc::clone(black_box(&s)));
        }
        let base = t.elapsed().as_nanos() as f64 / f64::from(n);
        Ok::<_, Box<dyn std::error::Error>>((hit, base))
    })?;
    let _ = std::fs::remove_dir_all(&tmp);
    println!("cache hit (Broker::token): {hit_ns:.1} ns/op over {n} calls");
    println!("baseline (Arc<str> clone):  {base_ns:.1} ns/op");
    println!("ratio: {:.1}x the baseline", hit_ns / base_ns.max(0.01));
    println!(
        "target < 2000 ns: {}",
        if hit_ns < 2000.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
