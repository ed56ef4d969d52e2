//! MQTT 3.1.1 QoS 0 (rumqttc) through the benchmark's own mosquitto.
//! Every publisher and subscriber is its own client connection (an MQTT
//! broker sends a client one copy of a message however many of its
//! subscriptions match, so four subscribers are four clients).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::common::*;

static CLIENTS: AtomicUsize = AtomicUsize::new(0);

fn client(port: u16) -> (AsyncClient, EventLoop) {
    let id = format!(
        "aether-peers-{}-{}",
        std::process::id(),
        CLIENTS.fetch_add(1, Ordering::Relaxed)
    );
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 1024)
}

/// Runs `eventloop`, handing every incoming publish's payload to `on`,
/// until the connection fails.
fn drive(
    mut eventloop: EventLoop,
    mut on: impl FnMut(Bytes) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => on(p.payload),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    })
}

async fn subscribers(
    port: u16,
    topic: &str,
    tallies: &[Arc<Tally>],
    tasks: &mut Tasks,
) -> Result<Vec<AsyncClient>, String> {
    let mut clients = Vec::new();
    for tally in tallies {
        let (c, eventloop) = client(port);
        c.subscribe(topic, QoS::AtMostOnce)
            .await
            .map_err(e("subscribe"))?;
        let tally = tally.clone();
        tasks.push(drive(eventloop, move |p| tally.on(&p)));
        clients.push(c);
    }
    Ok(clients)
}

pub async fn throughput(port: u16, n: usize, fan: usize) -> Result<Outcome, String> {
    let topic = if fan == 1 { "bench/one" } else { "bench/fan" };
    let tallies: Vec<_> = (0..fan).map(|_| Tally::new()).collect();
    let mut tasks = Tasks::default();
    let _subs = subscribers(port, topic, &tallies, &mut tasks).await?;
    let (tx, eventloop) = client(port);
    tasks.push(drive(eventloop, |_| {}));
    live!(
        "mqtt",
        &tallies,
        async {
            tx.publish(topic, QoS::AtMostOnce, false, PROBE)
                .await
                .map_err(e("probe"))
        }
        .await
    )?;
    let payload = payload();
    let start = now_ns();
    for _ in 0..n {
        tx.publish_bytes(topic, QoS::AtMostOnce, false, payload.clone())
            .await
            .map_err(e("publish"))?;
    }
    Ok(finish(&tallies, n, start).await)
}

/// A request topic and a response topic: the responder republishes each
/// request's payload on `bench/resp`.
pub async fn request_reply(
    port: u16,
    warm_up: usize,
    samples: usize,
) -> Result<Vec<Duration>, String> {
    let mut tasks = Tasks::default();
    let (responder, eventloop) = client(port);
    responder
        .subscribe("bench/req", QoS::AtMostOnce)
        .await
        .map_err(e("subscribe"))?;
    let echo = responder.clone();
    tasks.push(drive(eventloop, move |p| {
        let _ = echo.try_publish("bench/resp", QoS::AtMostOnce, false, p.to_vec());
    }));
    let (requester, eventloop) = client(port);
    requester
        .subscribe("bench/resp", QoS::AtMostOnce)
        .await
        .map_err(e("subscribe"))?;
    let (replies_tx, mut replies) = mpsc::unbounded_channel();
    tasks.push(drive(eventloop, move |p| {
        let _ = replies_tx.send(p);
    }));
    let payload = payload();
    macro_rules! request {
        ($wait:expr) => {{
            let wait: Duration = $wait;
            let r: Result<(), String> = async {
                requester
                    .publish_bytes("bench/req", QoS::AtMostOnce, false, payload.clone())
                    .await
                    .map_err(e("publish"))?;
                match tokio::time::timeout(wait, replies.recv()).await {
                    Ok(Some(body)) if body == payload => Ok(()),
                    Ok(Some(_)) => Err("mqtt: the reply is not the request".into()),
                    _ => Err("mqtt: no reply".into()),
                }
            }
            .await;
            r
        }};
    }
    // Live once a request is answered; then drain late answers.
    let deadline = Instant::now() + PROBE_LIMIT;
    while let Err(error) = request!(Duration::from_millis(50)) {
        if Instant::now() > deadline {
            return Err(format!("mqtt: responder not live: {error}"));
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    while replies.try_recv().is_ok() {}
    timed!(warm_up, samples, request!(REQUEST_TIMEOUT))
}

pub async fn steady(port: u16, n: usize, skip: usize) -> Result<(Vec<Duration>, usize), String> {
    let tally = Tally::timing();
    let mut tasks = Tasks::default();
    let _subs = subscribers(
        port,
        "bench/steady",
        std::slice::from_ref(&tally),
        &mut tasks,
    )
    .await?;
    let (tx, eventloop) = client(port);
    tasks.push(drive(eventloop, |_| {}));
    live!(
        "mqtt",
        std::slice::from_ref(&tally),
        async {
            tx.publish("bench/steady", QoS::AtMostOnce, false, PROBE)
                .await
                .map_err(e("probe"))
        }
        .await
    )?;
    let handle = tokio::runtime::Handle::current();
    let sender = tx.clone();
    pace(n, move |p| {
        handle
            .block_on(sender.publish_bytes("bench/steady", QoS::AtMostOnce, false, p))
            .map_err(e("publish"))
    })
    .await?;
    Ok(steady_outcome(&tally, n, skip).await)
}
