//! Zenoh in peer mode inside this process: two sessions, one listening on a
//! free loopback TCP port, the other connecting to it. Multicast scouting
//! off: nothing leaves loopback. Publishers block on congestion (the
//! default for data is to drop), so nothing is lost.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, TcpListener},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use zenoh::{Config, Session, Wait, bytes::ZBytes, qos::CongestionControl};

use crate::common::*;

fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = l.local_addr().expect("addr").port();
        if ![4222, 6379, 1883].contains(&port) {
            return port;
        }
    }
}

fn config(listen: Option<u16>, connect: Option<u16>) -> Result<Config, String> {
    let mut c = Config::default();
    let set = |c: &mut Config, k: &str, v: String| {
        c.insert_json5(k, &v)
            .map_err(|e| format!("zenoh config {k}: {e}"))
    };
    set(&mut c, "mode", r#""peer""#.into())?;
    set(&mut c, "scouting/multicast/enabled", "false".into())?;
    let listen = match listen {
        Some(p) => format!(r#"["tcp/127.0.0.1:{p}"]"#),
        None => "[]".into(),
    };
    set(&mut c, "listen/endpoints", listen)?;
    let connect = match connect {
        Some(p) => format!(r#"["tcp/127.0.0.1:{p}"]"#),
        None => "[]".into(),
    };
    set(&mut c, "connect/endpoints", connect)?;
    Ok(c)
}

/// Two peer sessions over loopback TCP: (sending, receiving).
pub async fn pair() -> Result<(Session, Session), String> {
    let port = free_port();
    let rx = zenoh::open(config(Some(port), None)?)
        .await
        .map_err(e("zenoh open (listen)"))?;
    let tx = zenoh::open(config(None, Some(port))?)
        .await
        .map_err(e("zenoh open (connect)"))?;
    Ok((tx, rx))
}

async fn close(tx: Session, rx: Session) {
    let _ = tokio::time::timeout(Duration::from_secs(5), tx.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), rx.close()).await;
}

/// `fan` subscribers on `key` in session `rx`: callbacks, or the default
/// FIFO channel read by a task each. The subscribers are returned to be
/// kept alive.
async fn subscribe(
    rx: &Session,
    key: &'static str,
    tallies: &[Arc<Tally>],
    callback: bool,
    tasks: &mut Tasks,
) -> Result<Vec<Box<dyn std::any::Any + Send>>, String> {
    let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    for tally in tallies {
        let tally = tally.clone();
        if callback {
            let sub = rx
                .declare_subscriber(key)
                .callback(move |sample| tally.on(&sample.payload().to_bytes()))
                .await
                .map_err(e("zenoh subscribe"))?;
            keep.push(Box::new(sub));
        } else {
            let sub = rx
                .declare_subscriber(key)
                .await
                .map_err(e("zenoh subscribe"))?;
            tasks.push(tokio::spawn(async move {
                while let Ok(sample) = sub.recv_async().await {
                    tally.on(&sample.payload().to_bytes());
                }
            }));
        }
    }
    Ok(keep)
}

/// 1 -> `fan`: a put per message on a declared publisher.
pub async fn throughput(n: usize, fan: usize, callback: bool) -> Result<Outcome, String> {
    let (tx, rx) = pair().await?;
    let key = if fan == 1 { "bench/one" } else { "bench/fan" };
    let tallies: Vec<_> = (0..fan).map(|_| Tally::new()).collect();
    let mut tasks = Tasks::default();
    let keep = subscribe(&rx, key, &tallies, callback, &mut tasks).await?;
    let publisher = tx
        .declare_publisher(key)
        .congestion_control(CongestionControl::Block)
        .await
        .map_err(e("zenoh publisher"))?;
    live!(
        "zenoh",
        &tallies,
        async { publisher.put(PROBE).await.map_err(e("probe")) }.await
    )?;
    let payload = ZBytes::from(payload());
    let start = now_ns();
    for _ in 0..n {
        publisher.put(payload.clone()).await.map_err(e("put"))?;
    }
    let outcome = finish(&tallies, n, start).await;
    drop(publisher);
    drop(keep);
    drop(tasks);
    close(tx, rx).await;
    Ok(outcome)
}

/// Sequential `get`s to a queryable (read from its default FIFO channel)
/// that replies with the query's payload; the first reply timed.
pub async fn request_reply(warm_up: usize, samples: usize) -> Result<Vec<Duration>, String> {
    let (tx, rx) = pair().await?;
    let queryable = rx
        .declare_queryable("bench/req")
        .await
        .map_err(e("zenoh queryable"))?;
    let mut tasks = Tasks::default();
    tasks.push(tokio::spawn(async move {
        while let Ok(query) = queryable.recv_async().await {
            let payload = query.payload().cloned().unwrap_or_default();
            let _ = query.reply(query.key_expr().clone(), payload).await;
        }
    }));
    let payload = payload();
    macro_rules! request {
        () => {{
            let r: Result<(), String> = async {
                let replies = tx
                    .get("bench/req")
                    .payload(ZBytes::from(payload.clone()))
                    .timeout(REQUEST_TIMEOUT)
                    .await
                    .map_err(e("zenoh get"))?;
                let reply = replies
                    .recv_async()
                    .await
                    .map_err(|_| "zenoh: no reply".to_string())?;
                let sample = reply
                    .result()
                    .map_err(|_| "zenoh: an error reply".to_string())?;
                if sample.payload().to_bytes().as_ref() != payload.as_ref() {
                    return Err("zenoh: the reply is not the request".into());
                }
                Ok(())
            }
            .await;
            r
        }};
    }
    let deadline = Instant::now() + PROBE_LIMIT;
    while let Err(error) = request!() {
        if Instant::now() > deadline {
            return Err(format!("zenoh: queryable not reached: {error}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = timed!(warm_up, samples, request!());
    drop(tasks);
    close(tx, rx).await;
    out
}

pub async fn steady(
    n: usize,
    skip: usize,
    callback: bool,
) -> Result<(Vec<Duration>, usize), String> {
    let (tx, rx) = pair().await?;
    let tally = Tally::timing();
    let mut tasks = Tasks::default();
    let keep = subscribe(
        &rx,
        "bench/steady",
        std::slice::from_ref(&tally),
        callback,
        &mut tasks,
    )
    .await?;
    let publisher = tx
        .declare_publisher("bench/steady")
        .congestion_control(CongestionControl::Block)
        .await
        .map_err(e("zenoh publisher"))?;
    live!(
        "zenoh",
        std::slice::from_ref(&tally),
        async { publisher.put(PROBE).await.map_err(e("probe")) }.await
    )?;
    let publisher = Arc::new(publisher);
    let sender = publisher.clone();
    pace(n, move |p| {
        sender.put(ZBytes::from(p)).wait().map_err(e("put"))
    })
    .await?;
    let out = steady_outcome(&tally, n, skip).await;
    drop(publisher);
    drop(keep);
    drop(tasks);
    close(tx, rx).await;
    Ok(out)
}

// --- state: put + subscriber (no storage) -----------------------------------

pub async fn state_latency(
    round: usize,
    warm: usize,
    samples: usize,
) -> Result<Vec<Duration>, String> {
    let (tx, rx) = pair().await?;
    let prefix = format!("state/lat{round}");
    let sub = rx
        .declare_subscriber(format!("{prefix}/**"))
        .await
        .map_err(e("zenoh subscribe"))?;
    let value = Bytes::from(vec![0xAB; 128]);
    // Live once a put arrives.
    let deadline = Instant::now() + PROBE_LIMIT;
    loop {
        tx.put(format!("{prefix}/probe"), PROBE)
            .await
            .map_err(e("put"))?;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(20), sub.recv_async()).await {
            break;
        }
        if Instant::now() > deadline {
            return Err("zenoh state: subscriber not live".into());
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    while sub.try_recv().ok().flatten().is_some() {}
    let mut out = Vec::with_capacity(samples);
    for i in 0..warm + samples {
        let key = format!("{prefix}/lat.{}", i % 100);
        let start = Instant::now();
        let (put, seen) = tokio::join!(
            tx.put(&key, ZBytes::from(value.clone()))
                .congestion_control(CongestionControl::Block)
                .into_future(),
            async {
                let sample = tokio::time::timeout(REQUEST_TIMEOUT, sub.recv_async()).await;
                (start.elapsed(), sample)
            }
        );
        put.map_err(e("put"))?;
        match seen.1 {
            Ok(Ok(sample)) if sample.key_expr().as_str() == key => {}
            _ => return Err("zenoh state: the put was not seen".into()),
        }
        if i >= warm {
            out.push(seen.0);
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    drop(sub);
    close(tx, rx).await;
    Ok(out)
}

pub async fn state_rate(round: usize, n: usize) -> Result<(f64, usize), String> {
    let (tx, rx) = pair().await?;
    let prefix = format!("state/rate{round}");
    let keys = Arc::new(Mutex::new(HashSet::<String>::new()));
    let held = keys.clone();
    let probes = Tally::new();
    let p = probes.clone();
    let sub = rx
        .declare_subscriber(format!("{prefix}/**"))
        .callback(move |sample| {
            if sample.payload().len() == 128 {
                held.lock()
                    .expect("keys")
                    .insert(sample.key_expr().as_str().to_string());
            } else {
                p.on(b"probe");
            }
        })
        .await
        .map_err(e("zenoh subscribe"))?;
    live!(
        "zenoh state",
        std::slice::from_ref(&probes),
        async {
            tx.put(format!("{prefix}/probe"), PROBE)
                .await
                .map_err(e("put"))
        }
        .await
    )?;
    let value = ZBytes::from(Bytes::from(vec![0xAB; 128]));
    let start = Instant::now();
    for i in 0..n {
        tx.put(format!("{prefix}/k.{i}"), value.clone())
            .congestion_control(CongestionControl::Block)
            .await
            .map_err(e("put"))?;
    }
    let out = crate::nats::wait_held(start, n, || keys.lock().expect("keys").len()).await;
    drop(sub);
    close(tx, rx).await;
    Ok(out)
}
