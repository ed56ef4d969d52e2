//! Redis (redis-rs, tokio) on the benchmark's own redis-server.
//!
//! - pub/sub: `PUBLISH` from a multiplexed connection, pipelined
//!   `PIPELINE` commands at a time (one awaited round trip per message
//!   would measure the round trip, not the bus); each subscriber its own
//!   pub/sub connection.
//! - request/reply: a list as the request queue. The requester sends
//!   `LPUSH bench:req <payload>` and `BRPOP bench:reply` in one pipeline;
//!   the responder `BRPOP`s the queue and `LPUSH`es the payload to the
//!   reply list.
//! - state: a hash plus pub/sub: the writer pipelines `HSET bench:map k v`
//!   and `PUBLISH bench:changes k<NUL>v`; the reader applies the changes to
//!   its own copy. (Keyspace notifications name the hash, not the field,
//!   so a reader would have to read the whole hash back.)

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::{AsyncConnectionConfig, Client, aio::MultiplexedConnection};

use crate::common::*;

const PIPELINE: usize = 256;

async fn connection(client: &Client) -> Result<MultiplexedConnection, String> {
    client
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(e("redis connect"))
}

async fn subscribers(
    client: &Client,
    channel: &str,
    tallies: &[Arc<Tally>],
    tasks: &mut Tasks,
) -> Result<(), String> {
    for tally in tallies {
        let mut pubsub = client.get_async_pubsub().await.map_err(e("redis pubsub"))?;
        pubsub.subscribe(channel).await.map_err(e("subscribe"))?;
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                tally.on(msg.get_payload_bytes());
            }
        }));
    }
    Ok(())
}

async fn publish(
    con: &mut MultiplexedConnection,
    channel: &str,
    payload: &[u8],
) -> Result<(), String> {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async::<()>(con)
        .await
        .map_err(e("publish"))
}

pub async fn throughput(url: String, n: usize, fan: usize) -> Result<Outcome, String> {
    let client = Client::open(url.as_str()).map_err(e("redis url"))?;
    let channel = if fan == 1 { "bench.one" } else { "bench.fan" };
    let tallies: Vec<_> = (0..fan).map(|_| Tally::new()).collect();
    let mut tasks = Tasks::default();
    subscribers(&client, channel, &tallies, &mut tasks).await?;
    let mut con = connection(&client).await?;
    live!("redis", &tallies, publish(&mut con, channel, PROBE).await)?;
    let payload = payload();
    let start = now_ns();
    let mut sent = 0;
    while sent < n {
        let batch = PIPELINE.min(n - sent);
        let mut pipe = redis::pipe();
        for _ in 0..batch {
            pipe.cmd("PUBLISH").arg(channel).arg(&payload[..]).ignore();
        }
        pipe.query_async::<()>(&mut con)
            .await
            .map_err(e("pipeline"))?;
        sent += batch;
    }
    Ok(finish(&tallies, n, start).await)
}

pub async fn request_reply(
    url: String,
    warm_up: usize,
    samples: usize,
) -> Result<Vec<Duration>, String> {
    let client = Client::open(url.as_str()).map_err(e("redis url"))?;
    let mut responder = connection(&client).await?;
    let mut requester = connection(&client).await?;
    let _: () = redis::cmd("DEL")
        .arg("bench:req")
        .arg("bench:reply")
        .query_async(&mut requester)
        .await
        .map_err(e("del"))?;
    let mut tasks = Tasks::default();
    tasks.push(tokio::spawn(async move {
        loop {
            let popped: Result<Option<(String, Vec<u8>)>, _> = redis::cmd("BRPOP")
                .arg("bench:req")
                .arg(1)
                .query_async(&mut responder)
                .await;
            match popped {
                Ok(Some((_, payload))) => {
                    let pushed: Result<(), _> = redis::cmd("LPUSH")
                        .arg("bench:reply")
                        .arg(payload)
                        .query_async(&mut responder)
                        .await;
                    if pushed.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }
    }));
    let payload = payload();
    macro_rules! request {
        () => {{
            let r: Result<(), String> = async {
                let (reply,): (Option<(String, Vec<u8>)>,) = redis::pipe()
                    .cmd("LPUSH")
                    .arg("bench:req")
                    .arg(&payload[..])
                    .ignore()
                    .cmd("BRPOP")
                    .arg("bench:reply")
                    .arg(REQUEST_TIMEOUT.as_secs())
                    .query_async(&mut requester)
                    .await
                    .map_err(e("redis request"))?;
                match reply {
                    Some((_, body)) if body == payload.as_ref() => Ok(()),
                    Some(_) => Err("redis: the reply is not the request".into()),
                    None => Err("redis: no reply".into()),
                }
            }
            .await;
            r
        }};
    }
    timed!(warm_up, samples, request!())
}

pub async fn steady(url: String, n: usize, skip: usize) -> Result<(Vec<Duration>, usize), String> {
    let client = Client::open(url.as_str()).map_err(e("redis url"))?;
    let tally = Tally::timing();
    let mut tasks = Tasks::default();
    subscribers(
        &client,
        "bench.steady",
        std::slice::from_ref(&tally),
        &mut tasks,
    )
    .await?;
    let mut con = connection(&client).await?;
    live!(
        "redis",
        std::slice::from_ref(&tally),
        async { publish(&mut con, "bench.steady", PROBE).await }.await
    )?;
    let handle = tokio::runtime::Handle::current();
    pace(n, move |p| {
        handle.block_on(publish(&mut con, "bench.steady", &p))
    })
    .await?;
    Ok(steady_outcome(&tally, n, skip).await)
}

// --- state: a hash plus pub/sub ---------------------------------------------

async fn write(
    con: &mut MultiplexedConnection,
    map: &str,
    key: &str,
    value: &[u8],
) -> Result<(), String> {
    let mut change = key.as_bytes().to_vec();
    change.push(0);
    change.extend_from_slice(value);
    redis::pipe()
        .cmd("HSET")
        .arg(map)
        .arg(key)
        .arg(value)
        .ignore()
        .cmd("PUBLISH")
        .arg(format!("{map}:changes"))
        .arg(change)
        .ignore()
        .query_async::<()>(con)
        .await
        .map_err(e("hset+publish"))
}

/// The key of a change message.
fn key_of(change: &[u8]) -> Option<String> {
    let nul = change.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&change[..nul]).into_owned())
}

pub async fn state_latency(
    url: String,
    round: usize,
    warm: usize,
    samples: usize,
) -> Result<Vec<Duration>, String> {
    let client = Client::open(url.as_str()).map_err(e("redis url"))?;
    let map = format!("bench:lat{round}");
    let mut pubsub = client.get_async_pubsub().await.map_err(e("redis pubsub"))?;
    pubsub
        .subscribe(format!("{map}:changes"))
        .await
        .map_err(e("subscribe"))?;
    let mut stream = pubsub.into_on_message();
    let mut con = connection(&client).await?;
    let value = vec![0xAB; 128];
    let mut out = Vec::with_capacity(samples);
    for i in 0..warm + samples {
        let key = format!("lat.{}", i % 100);
        let start = Instant::now();
        let (written, seen) = tokio::join!(write(&mut con, &map, &key, &value), async {
            let msg = tokio::time::timeout(REQUEST_TIMEOUT, stream.next()).await;
            (start.elapsed(), msg)
        });
        written?;
        match seen.1 {
            Ok(Some(msg)) if key_of(msg.get_payload_bytes()).as_deref() == Some(key.as_str()) => {}
            _ => return Err("redis state: the change was not seen".into()),
        }
        if i >= warm {
            out.push(seen.0);
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let _: Result<(), _> = redis::cmd("DEL").arg(&map).query_async(&mut con).await;
    Ok(out)
}

pub async fn state_rate(url: String, round: usize, n: usize) -> Result<(f64, usize), String> {
    let client = Client::open(url.as_str()).map_err(e("redis url"))?;
    let map = format!("bench:rate{round}");
    let mut pubsub = client.get_async_pubsub().await.map_err(e("redis pubsub"))?;
    pubsub
        .subscribe(format!("{map}:changes"))
        .await
        .map_err(e("subscribe"))?;
    let keys = Arc::new(Mutex::new(HashSet::<String>::new()));
    let held = keys.clone();
    let probes = Tally::new();
    let p = probes.clone();
    let mut tasks = Tasks::default();
    tasks.push(tokio::spawn(async move {
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            match key_of(msg.get_payload_bytes()) {
                Some(k) if k == "probe" => p.on(b"probe"),
                Some(k) => {
                    held.lock().expect("keys").insert(k);
                }
                None => {}
            }
        }
    }));
    let mut con = connection(&client).await?;
    live!(
        "redis state",
        std::slice::from_ref(&probes),
        async { write(&mut con, &map, "probe", b"p").await }.await
    )?;
    let value = Bytes::from(vec![0xAB; 128]);
    let start = Instant::now();
    for i in 0..n {
        write(&mut con, &map, &format!("k.{i}"), &value).await?;
    }
    let out = crate::nats::wait_held(start, n, || keys.lock().expect("keys").len()).await;
    let _: Result<(), _> = redis::cmd("DEL").arg(&map).query_async(&mut con).await;
    Ok(out)
}
