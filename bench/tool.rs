//! Helpers for `bench/run.sh` (built with `cargo build --release --example bench-tool`):
//!
//! - `argon2 N`: the mean time of one Argon2id verification, over N, with the gateway's
//!   parameters;
//! - `fill REDIS_URL PREFIX N`: writes N live families (as logins would) straight through
//!   the Redis store, for the memory and scale measurements;
//! - `probe URL SECONDS RATE`: GETs `URL` RATE times a second for SECONDS, one request at a
//!   time on one keep-alive connection, as a load balancer's health check would, and prints
//!   the p50, p99 and maximum latency in ms. (`wrk` cannot hold a rate: as a probe it would
//!   itself take a core from the load it observes.)
//! - `revocation A_URL B_URL EMAIL PASSWORD N`: N times, signs in on instance A, has
//!   instance B answer the session twice (the second from memory when B tracks liveness),
//!   logs out on A, and asks B until it answers 401; prints the p50, p99 and maximum time
//!   from A's logout answer to B's 401 in ms, and how many were a 401 at the first request.

use std::{sync::Arc, time::Instant};

use bffgate::{
    clock::{Clock as _, SystemClock},
    password::{hash_blocking, Passwords},
    store::{
        redis::{RedisStore, Topology},
        NewFamily, Store,
    },
    tokens::{new_id, RefreshToken},
};

const IDLE_MS: i64 = 14 * 24 * 3600 * 1000;
const MAX_MS: i64 = 30 * 24 * 3600 * 1000;

async fn argon2(n: u32) -> Result<(), String> {
    let hash = hash_blocking("a benchmark password").map_err(|e| e.to_string())?;
    let passwords = Passwords::new(1).map_err(|e| e.to_string())?;
    let start = Instant::now();
    for _ in 0..n {
        let ok = passwords
            .verify("a benchmark password".into(), Some(hash.clone()))
            .await
            .map_err(|e| e.to_string())?;
        assert!(ok, "verification");
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0 / f64::from(n);
    println!("{ms:.2}");
    Ok(())
}

/// Fills `n` families into the Redis at `url`, or the Cluster whose nodes `url` lists
/// comma-separated.
async fn fill(url: &str, prefix: &str, n: usize) -> Result<(), String> {
    let topology = if url.contains(',') {
        Topology::Cluster {
            nodes: url.split(',').map(str::to_owned).collect(),
        }
    } else {
        Topology::Standalone {
            url: url.to_owned(),
        }
    };
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::open(
            &topology,
            None,
            prefix,
            32,
            std::time::Duration::from_secs(10),
        )
        .map_err(|e| e.to_string())?,
    );
    let user = new_id().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let workers = 32;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let store = Arc::clone(&store);
        let user = user.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (w..n).step_by(workers) {
                let id = new_id().map_err(|e| e.to_string())?;
                let token = RefreshToken::generate(&id, 0).map_err(|e| e.to_string())?;
                let now = SystemClock.now_ms();
                store
                    .create_family(&NewFamily {
                        id,
                        user_id: user.clone(),
                        secret_hash: token.secret_hash(),
                        now,
                        idle_ms: IDLE_MS,
                        abs_exp: now + MAX_MS,
                        user_agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36".into(),
                        ip: "203.0.113.7".into(),
                    })
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    eprintln!(
        "filled {n} families in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn probe(url: &str, seconds: u64, rate: u32) -> Result<(), String> {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + std::time::Duration::from_secs(seconds);
    let mut ms = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let start = Instant::now();
        let status = client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .status();
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!("{:.3} {:.3} {:.3}", at(0.5), at(0.99), at(1.0));
    Ok(())
}

/// The session cookie (`name=value`) an answer sets.
fn set_cookie(res: &reqwest::Response) -> Result<String, String> {
    res.headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| "no cookie set".to_owned())
}

async fn revocation(a: &str, b: &str, email: &str, password: &str, n: usize) -> Result<(), String> {
    let client = reqwest::Client::new();
    let e = |e: reqwest::Error| e.to_string();
    let session_status = |cookie: &str| {
        client
            .get(format!("{b}/auth/session"))
            .header("x-csrf", "1")
            .header("cookie", cookie)
            .send()
    };
    let mut delays = Vec::with_capacity(n);
    let mut first = 0;
    for _ in 0..n {
        let login = client
            .post(format!("{a}/auth/login"))
            .header("x-csrf", "1")
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .map_err(e)?;
        if !login.status().is_success() {
            return Err(format!("login answered {}", login.status()));
        }
        let cookie = set_cookie(&login)?;
        for _ in 0..2 {
            let status = session_status(&cookie).await.map_err(e)?.status();
            if status != 200 {
                return Err(format!("B answered {status} to a live session"));
            }
        }
        let logout = client
            .post(format!("{a}/auth/logout"))
            .header("x-csrf", "1")
            .header("cookie", &cookie)
            .send()
            .await
            .map_err(e)?;
        let answered = Instant::now();
        if !logout.status().is_success() {
            return Err(format!("logout answered {}", logout.status()));
        }
        let mut requests = 0;
        loop {
            requests += 1;
            match session_status(&cookie).await.map_err(e)?.status().as_u16() {
                401 => break,
                200 if answered.elapsed().as_secs() < 5 => {}
                status => return Err(format!("B answered {status} after the logout")),
            }
        }
        delays.push(answered.elapsed().as_secs_f64() * 1000.0);
        first += usize::from(requests == 1);
    }
    delays.sort_by(f64::total_cmp);
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    println!("{:.3} {:.3} {:.3} {first}", at(0.5), at(0.99), at(1.0));
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["argon2", n] => match n.parse() {
            Ok(n) => argon2(n).await,
            Err(_) => Err("argon2 N".into()),
        },
        ["fill", url, prefix, n] => match n.parse() {
            Ok(n) => fill(url, prefix, n).await,
            Err(_) => Err("fill REDIS_URL[,NODE...] PREFIX N".into()),
        },
        ["probe", url, seconds, rate] => match (seconds.parse(), rate.parse()) {
            (Ok(seconds), Ok(rate)) => probe(url, seconds, rate).await,
            _ => Err("probe URL SECONDS RATE".into()),
        },
        ["revocation", a, b, email, password, n] => match n.parse() {
            Ok(n) if n > 0 => revocation(a, b, email, password, n).await,
            _ => Err("revocation A_URL B_URL EMAIL PASSWORD N".into()),
        },
        _ => Err(
            "usage: bench-tool argon2 N | fill REDIS_URL[,NODE...] PREFIX N | probe URL SECONDS RATE \
             | revocation A_URL B_URL EMAIL PASSWORD N"
                .into(),
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
