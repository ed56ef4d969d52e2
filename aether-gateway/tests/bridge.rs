//! The browser bridge from outside, over real WebSockets on loopback: the
//! README's protocol block against the running gateway, convergence with a
//! Rust replica, every limit against hostile clients (refused, counted,
//! others unaffected), and TLS.

mod support;

use std::{collections::BTreeSet, time::Duration};

use aether_core::{Aether, state::StateMap};
use aether_gateway::{BridgeConfig, Gateway, GatewayConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{
    bridge::{Client, close_of, now_ns, open, open_from, stamp},
    config, get, start,
};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "a-token-of-the-tests-0123456789";

fn bridged(bridge: BridgeConfig) -> GatewayConfig {
    GatewayConfig {
        bridge: BridgeConfig {
            token: Some(TOKEN.into()),
            maps: vec!["board".into()],
            ..bridge
        },
        ..config()
    }
}

/// The service's replica of the board in `aether`.
async fn service_board(aether: &Aether) -> StateMap {
    StateMap::builder("board")
        .node("service")
        .open(aether)
        .await
        .unwrap()
}

/// An aether, a gateway on it bridging the board with the default limits,
/// and the service's replica of the board.
async fn board() -> (Aether, Gateway, StateMap) {
    let aether = Aether::default();
    let gateway = start(&aether, bridged(BridgeConfig::default())).await;
    let service = service_board(&aether).await;
    (aether, gateway, service)
}

/// Closes the service's replica, then stops the gateway.
async fn close_board(service: StateMap, gateway: Gateway) {
    service.close().await;
    gateway.stop().await.unwrap();
}

/// The value of a counter or gauge line of the metrics text (0 if absent).
fn metric(gateway: &Gateway, series: &str) -> u64 {
    gateway
        .metrics_text()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn refused(gateway: &Gateway, reason: &str) -> u64 {
    metric(
        gateway,
        &format!("aether_bridge_refused_total{{reason=\"{reason}\"}}"),
    )
}

/// Waits (up to 10 s) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 10 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- the README's protocol block ------------------------------------------

/// The protocol block of the README: its message templates by direction,
/// and the `<entry>` and `<write>` alternatives.
struct Protocol {
    inbound: Vec<Value>,
    outbound: Vec<Value>,
    entries: Vec<Value>,
    writes: Vec<Value>,
    reasons: Vec<String>,
}

/// Makes a template line JSON: bare placeholders become strings.
fn template(line: &str) -> Value {
    let quoted = line
        .replace("<json>", "\"<json>\"")
        .replace("<int>", "\"<int>\"")
        .replace("<int?>", "\"<int?>\"")
        .replace("<json?>", "\"<json?>\"")
        .replace("<prev>", "\"<prev>\"")
        .replace("<id>", "\"<id>\"")
        .replace("<entry>", "\"<entry>\"")
        .replace("<bool>", "\"<bool>\"")
        .replace("<prefixes>", "\"<prefixes>\"")
        .replace("[<write>, ...]", "\"<write>, ...\"")
        .replace("\"\"<", "\"<")
        .replace(">\"\"", ">\"");
    serde_json::from_str(&quoted).unwrap_or_else(|e| panic!("template {line:?}: {e}"))
}

fn protocol() -> Protocol {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("the README");
    let start = readme
        .find("```text\nbrowser -> gateway\n")
        .expect("the README has the bridge's protocol block");
    let block = &readme[start + 8..];
    let block = &block[..block.find("```").expect("the block ends")];
    let (mut inbound, mut outbound, mut entries, mut writes, mut reasons) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut side = None;
    for line in block.lines() {
        match line.trim() {
            "browser -> gateway" => side = Some(true),
            "gateway -> browser" => side = Some(false),
            l if l.starts_with('{') => match side {
                Some(true) => inbound.push(template(l)),
                Some(false) => outbound.push(template(l)),
                None => panic!("a message before a direction: {l}"),
            },
            l if l.starts_with("<entry>") => {
                for alternative in l["<entry>".len()..].split(" or ") {
                    entries.push(template(alternative.trim()));
                }
            }
            l if l.starts_with("<write>") => {
                for alternative in l["<write>".len()..].split(" or ") {
                    writes.push(template(alternative.trim()));
                }
            }
            l if l.starts_with("<reason>") => {
                reasons = l["<reason>".len()..]
                    .split('|')
                    .map(|r| r.trim().to_string())
                    .collect();
            }
            _ => {}
        }
    }
    assert!(
        inbound.len() >= 4
            && outbound.len() >= 7
            && entries.len() == 2
            && writes.len() == 2
            && !reasons.is_empty()
    );
    // The refusals the README lists are those the gateway names.
    assert_eq!(
        reasons,
        aether_gateway::bridge::WRITE_OUTCOMES[2..],
        "the README's <reason> line"
    );
    Protocol {
        inbound,
        outbound,
        entries,
        writes,
        reasons,
    }
}

fn is_stamp(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 42
        && b[16] == b'-'
        && b[25] == b'-'
        && text
            .bytes()
            .enumerate()
            .all(|(i, c)| i == 16 || i == 25 || c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

impl Protocol {
    /// Whether `message` is exactly what `template` says: the same fields,
    /// no more, each of the type its placeholder names.
    fn fits(&self, template: &Value, message: &Value) -> bool {
        match template {
            Value::String(placeholder) => match placeholder.as_str() {
                "<json>" | "<json?>" => true,
                "<int?>" => self.fits(&Value::from("<int>"), message),
                "<int>" => message.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                "<id>" => message.as_u64().is_some_and(|n| n < 1 << 53),
                "<prev>" => message.is_null() || message.as_str().is_some_and(is_stamp),
                "<str>" | "<key>" => message.is_string(),
                "<stamp>" => message.as_str().is_some_and(is_stamp),
                "<replica>" => message.as_str().is_some_and(|r| {
                    r.len() == 16
                        && r != "0000000000000000"
                        && is_stamp(&format!("{}-00000000-{r}", "0".repeat(16)))
                }),
                "<reason>" => message
                    .as_str()
                    .is_some_and(|r| self.reasons.iter().any(|x| x == r)),
                "<entry>" => self.entries.iter().any(|e| self.fits(e, message)),
                "<bool>" => message.is_boolean(),
                "<prefixes>" => {
                    message.is_null()
                        || message
                            .as_array()
                            .is_some_and(|all| all.iter().all(Value::is_string))
                }
                // One write or more, each one of `<write>`'s shapes.
                "<write>, ..." => message.as_array().is_some_and(|all| {
                    !all.is_empty()
                        && all
                            .iter()
                            .all(|m| self.writes.iter().any(|w| self.fits(w, m)))
                }),
                literal => message.as_str() == Some(literal),
            },
            Value::Object(fields) if fields.len() == 1 && fields.contains_key("<key>") => message
                .as_object()
                .is_some_and(|m| m.values().all(|v| self.fits(&fields["<key>"], v))),
            // Every field the template has, no other; a `<prev>` may be
            // left out.
            Value::Object(fields) => message.as_object().is_some_and(|m| {
                m.keys().all(|k| fields.contains_key(k))
                    && fields.iter().all(|(k, t)| match m.get(k) {
                        Some(v) => self.fits(t, v),
                        None => t == "<prev>" || t.as_str().is_some_and(|t| t.ends_with("?>")),
                    })
            }),
            other => other == message,
        }
    }

    /// The template of `direction` for `message`'s type.
    fn of<'a>(templates: &'a [Value], kind: &str) -> &'a Value {
        templates
            .iter()
            .find(|t| t["type"] == kind)
            .unwrap_or_else(|| panic!("the README lists no {kind:?} message"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_block_is_exactly_what_the_gateway_sends_and_accepts() {
    let protocol = protocol();
    let (_aether, gateway, service) = board().await;
    let addr = gateway.addr();

    // Accepted: each browser -> gateway shape, with its effect.
    let mut a = Client::connect(addr, "board", TOKEN).await;
    let mut b = Client::connect(addr, "board", TOKEN).await;
    let first = a.stamp();
    let set =
        json!({"type": "set", "key": "k1", "value": {"n": [1, 2]}, "stamp": first, "prev": null});
    assert!(protocol.fits(Protocol::of(&protocol.inbound, "set"), &set));
    a.send(set).await;
    let sync = json!({"type": "sync", "id": 9_007_199_254_740_991_u64});
    assert!(protocol.fits(Protocol::of(&protocol.inbound, "sync"), &sync));
    a.send(sync).await;
    let synced = a.until("synced", None).await;
    assert_eq!(synced["id"], 9_007_199_254_740_991_u64);
    // `synced`: the gateway's replica took the write; the service's is
    // another replica, which hears it a moment later.
    eventually("the service took k1", || service.get("k1").is_some()).await;
    let relayed = b.until("set", Some("k1")).await;
    assert_eq!(
        relayed.get("prev"),
        Some(&Value::Null),
        "the writer's prev, passed on"
    );
    let again = json!({"type": "set", "key": "k1", "value": {"n": [1, 2]}, "stamp": a.stamp(), "prev": first});
    a.send(again).await;
    assert_eq!(b.until("set", Some("k1")).await["prev"], first.as_str());
    assert_eq!(
        service.get_json::<Value>("k1").unwrap(),
        Some(json!({"n": [1, 2]}))
    );
    let delete = json!({"type": "delete", "key": "k1", "stamp": a.stamp()});
    assert!(protocol.fits(Protocol::of(&protocol.inbound, "delete"), &delete));
    a.send(delete).await;
    eventually("the service lost k1", || service.get("k1").is_none()).await;
    // A group of writes in one message; another page gets changes that
    // came together as one `changes` (sent again until they do: a page
    // may take the first change alone).
    let mut grouped = None;
    for round in 0..20 {
        let writes: Vec<Value> = (0..50)
            .map(|n| {
                let key = format!("g{n}");
                if n % 10 == 9 {
                    json!({"key": key, "deleted": true, "stamp": a.stamp(), "prev": null})
                } else {
                    json!({"key": key, "value": [round, n], "stamp": a.stamp()})
                }
            })
            .collect();
        let message = json!({"type": "writes", "writes": writes});
        assert!(protocol.fits(Protocol::of(&protocol.inbound, "writes"), &message));
        a.send(message).await;
        b.until("set", Some("g48")).await;
        eventually("the service has the group", || {
            service.get_json::<Value>("g48").ok().flatten() == Some(json!([round, 48]))
                && service.get("g9").is_none()
        })
        .await;
        if let Some(changes) = b.received.iter().rev().find(|m| m["type"] == "changes") {
            grouped = Some(changes.clone());
            break;
        }
    }
    let grouped = grouped.expect("a group of writes reached another page as `changes`");
    assert!(
        grouped["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["deleted"] == true),
        "a delete among the changes: {grouped}"
    );
    let presence = json!({"type": "presence", "x": 10, "y": -3});
    assert!(protocol.fits(Protocol::of(&protocol.inbound, "presence"), &presence));
    // Each page is shown to the others from its hello on, with its color.
    let a_id = a.received[0]["id"].clone();
    let announced = b
        .received
        .iter()
        .find(|m| m["type"] == "presence")
        .cloned()
        .expect("a shown to b as it came");
    assert_eq!(announced["id"], a_id);
    assert!(
        announced.get("x").is_none() && announced.get("value").is_none(),
        "{announced}"
    );
    a.send(presence).await;
    let seen = loop {
        let seen = b.until("presence", None).await;
        if seen.get("x").is_some() {
            break seen;
        }
    };
    assert_eq!(
        (seen["x"].as_i64(), seen["y"].as_i64()),
        (Some(10), Some(-3))
    );
    assert!(seen.get("value").is_none(), "no value set yet: {seen}");
    let named = json!({"type": "presence", "value": {"name": "Ada"}});
    assert!(protocol.fits(Protocol::of(&protocol.inbound, "presence"), &named));
    a.send(named).await;
    let seen = b.until("presence", None).await;
    assert_eq!(
        (&seen["x"], &seen["value"]),
        (&json!(10), &json!({"name": "Ada"})),
        "a field left out stays"
    );

    // Sent: set and delete from a service, refused (and the entry after
    // it), a snapshot with a value and a tombstone, presence-leave.
    service.set_json("k2", &json!("two")).await.unwrap();
    let from_service = b.until("set", Some("k2")).await;
    assert!(
        from_service.get("prev").is_none(),
        "no prev for a service's write: {from_service}"
    );
    service.delete("k2").await.unwrap();
    b.until("delete", Some("k2")).await;
    service.set_json("k3", &3).await.unwrap();
    b.until("set", Some("k3")).await;
    let big = "x".repeat(40 * 1024);
    let stamp = b.stamp();
    b.send(json!({"type": "set", "key": "k3", "value": big, "stamp": stamp}))
        .await;
    let refusal = b.until("refused", Some("k3")).await;
    assert_eq!(refusal["reason"], "too_large");
    let after = b.until("set", Some("k3")).await;
    assert_eq!(
        after["value"], 3,
        "the refused write is answered with the entry"
    );
    a.socket.close(None).await.unwrap();
    b.until("presence-leave", None).await;
    // A map larger than one message: parts, then the snapshot.
    let large = "l".repeat(30 * 1024);
    for n in 0..12 {
        service
            .set_json(&format!("large{n}"), &large)
            .await
            .unwrap();
    }
    b.until("set", Some("large11")).await;
    let c = Client::connect(addr, "board", TOKEN).await;
    assert!(!c.parts.is_empty(), "a large map comes in parts");
    assert_eq!(c.received[1]["entries"]["large0"]["value"], large.as_str());
    let snapshot = c.received[1].clone();
    assert_eq!(snapshot["entries"]["k2"]["deleted"], true, "{snapshot}");
    assert_eq!(snapshot["entries"]["k3"]["value"], 3, "{snapshot}");

    // Every message received fits its template exactly, and every kind the
    // README lists was seen.
    let mut kinds = BTreeSet::new();
    for message in a
        .received
        .iter()
        .chain(&b.received)
        .chain(&c.received)
        .chain(&c.parts)
    {
        let kind = message["type"].as_str().expect("a type").to_string();
        let template = Protocol::of(&protocol.outbound, &kind);
        assert!(
            protocol.fits(template, message),
            "{message} does not fit {template}"
        );
        kinds.insert(kind);
    }
    let listed: BTreeSet<String> = protocol
        .outbound
        .iter()
        .map(|t| t["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, listed, "every message the README lists is sent");

    // Exactly: a field more, or one missing, is refused (1008).
    for template in &protocol.inbound {
        let kind = template["type"].as_str().unwrap();
        if kind == "auth" {
            continue;
        }
        let mut sample = match kind {
            "set" => json!({"type": "set", "key": "x", "value": 1, "stamp": stamp_now()}),
            "delete" => json!({"type": "delete", "key": "x", "stamp": stamp_now()}),
            "presence" => json!({"type": "presence", "x": 1, "y": 2}),
            "sync" => json!({"type": "sync", "id": 1}),
            "writes" => {
                json!({"type": "writes", "writes": [{"key": "x", "value": 1, "stamp": stamp_now()}]})
            }
            other => panic!("a message the test does not know: {other}"),
        };
        assert!(protocol.fits(template, &sample), "{sample}");
        sample["extra"] = json!(1);
        let mut d = Client::connect(addr, "board", TOKEN).await;
        d.send(sample).await;
        let (code, _) = close_of(&mut d.socket).await.expect("a close frame");
        assert_eq!(code, 1008, "{kind} with a field more");
    }
    let mut e = Client::connect_silent(addr, "board", TOKEN).await;
    drop(e.next().await);
    let missing = json!({"type": "set", "key": "x", "value": 1});
    e.send(missing).await;
    assert_eq!(close_of(&mut e.socket).await.map(|c| c.0), Some(1008));
    assert!(protocol.fits(
        Protocol::of(&protocol.inbound, "auth"),
        &json!({"type": "auth", "token": TOKEN, "replica": c.replica})
    ));
    close_board(service, gateway).await;
}

fn stamp_now() -> String {
    stamp(now_ns(), 0, "00000000000000ab")
}

// ---- convergence -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_a_rust_replica_converge_by_stamps() {
    let (_aether, gateway, service) = board().await;
    let addr = gateway.addr();
    let mut a = Client::connect(addr, "board", TOKEN).await;
    let mut b = Client::connect(addr, "board", TOKEN).await;

    // A page writes; the other page and the service see it.
    let mut watch = service.watch("title");
    let stamp_a = a.set("title", json!("from a")).await;
    let seen = b.until("set", Some("title")).await;
    assert_eq!(
        (seen["value"].clone(), seen["stamp"].clone()),
        (json!("from a"), json!(stamp_a))
    );
    let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.new.as_deref(), Some(&b"\"from a\""[..]));
    // (Presence may come: the other page shown as it came.)
    let own = async {
        while let Some(message) = a.try_next(Duration::from_millis(200)).await {
            if message["type"] != "presence" {
                return Some(message);
            }
        }
        None
    };
    assert_eq!(own.await, None, "a page does not get its own write back");

    // Concurrent writes of one key: every replica settles on the higher
    // stamp, whichever came last.
    let now = now_ns();
    let low = stamp(now, 0, &a.replica);
    let high = stamp(now, 1, &b.replica);
    b.send(json!({"type": "set", "key": "race", "value": "b wins", "stamp": high}))
        .await;
    eventually("the service has b's write", || {
        service.get_json::<String>("race").unwrap().as_deref() == Some("b wins")
    })
    .await;
    assert_eq!(a.until("set", Some("race")).await["value"], "b wins");
    // A's write, made at the same moment but lower: it lost at the
    // gateway, and its page is answered with the winner.
    a.send(json!({"type": "set", "key": "race", "value": "lower", "stamp": low}))
        .await;
    let answer = a.until("set", Some("race")).await;
    assert_eq!(
        (answer["value"].clone(), answer["stamp"].clone()),
        (json!("b wins"), json!(high))
    );
    assert_eq!(
        service.get_json::<String>("race").unwrap().as_deref(),
        Some("b wins")
    );
    assert_eq!(
        metric(&gateway, "aether_bridge_writes_total{outcome=\"stale\"}"),
        1
    );

    // A write made offline, older than the map's: it loses on return.
    let old = stamp(now_ns() - 60_000_000_000, 0, &a.replica);
    a.send(json!({"type": "set", "key": "title", "value": "stale", "stamp": old}))
        .await;
    let answer = a.until("set", Some("title")).await;
    assert_eq!(answer["value"], "from a");
    // A delete from a page is a tombstone for the service too.
    let stamp_b = b.stamp();
    b.send(json!({"type": "delete", "key": "title", "stamp": stamp_b}))
        .await;
    eventually("the service deleted title", || {
        service.get("title").is_none()
    })
    .await;
    a.until("delete", Some("title")).await;

    // A stamp too far ahead (a page with a wrong clock) is refused.
    let ahead = stamp(now_ns() + 3_600_000_000_000, 0, &a.replica);
    a.send(json!({"type": "set", "key": "clock", "value": 1, "stamp": ahead}))
        .await;
    let refusal = a.until("refused", Some("clock")).await;
    assert_eq!(refusal["reason"], "stamp");
    assert!(service.get("clock").is_none());
    assert_eq!(
        metric(&gateway, "aether_bridge_writes_total{outcome=\"stamp\"}"),
        1
    );
    // Another node's keys are not a page's to write.
    let stamp_owned = a.stamp();
    a.send(json!({"type": "set", "key": "node/service/x", "value": 1, "stamp": stamp_owned}))
        .await;
    assert_eq!(
        a.until("refused", Some("node/service/x")).await["reason"],
        "not_owner"
    );

    // A service writing raw bytes (not JSON): counted, not sent.
    service.set("raw", &b"\xff\x00"[..]).await.unwrap();
    service.set_json("after-raw", &1).await.unwrap();
    a.until("set", Some("after-raw")).await;
    assert!(!a.received.iter().any(|m| {
        m["key"] == "raw"
            || m["changes"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["key"] == "raw"))
    }));
    // Counted once per page it was not sent to (a and b).
    eventually("counted for both pages", || {
        metric(&gateway, "aether_bridge_values_not_json_total") == 2
    })
    .await;
    close_board(service, gateway).await;
}

// ---- hostile clients -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_refused_counted_and_others_unaffected() {
    let aether = Aether::default();
    let limits = BridgeConfig {
        max_connections: 40,
        max_connections_per_address: 12,
        max_message_bytes: 4096,
        messages_per_s: 20,
        burst: 40,
        first_message_ms: 300,
        ..Default::default()
    };
    let gateway = start(&aether, bridged(limits)).await;
    let addr = gateway.addr();
    let service = service_board(&aether).await;
    let mut good = Client::connect(addr, "board", TOKEN).await;

    // A wrong token: closed before any state is sent.
    let mut wrong = Client::connect_silent(addr, "board", "not-the-token-at-all").await;
    service.set_json("secret", &"s").await.unwrap();
    let mut saw_state = false;
    let close = loop {
        match wrong.socket.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(Message::Text(_))) => saw_state = true,
            _ => break None,
        }
    };
    assert!(!saw_state, "nothing is sent before the token");
    let close = close.expect("a close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1008, "unauthorized")
    );
    assert_eq!(refused(&gateway, "token"), 1);

    // A connection that never speaks.
    let mut silent = open(addr, "board").await;
    assert_eq!(close_of(&mut silent).await.map(|c| c.0), Some(1008));
    assert_eq!(refused(&gateway, "deadline"), 1);

    // A message over the size cap, a binary message, garbage.
    let mut big = Client::connect(addr, "board", TOKEN).await;
    big.send_text(format!(
        "{{\"type\":\"set\",\"key\":\"k\",\"value\":\"{}\",\"stamp\":\"x\"}}",
        "y".repeat(8192)
    ))
    .await;
    assert_eq!(close_of(&mut big.socket).await.map(|c| c.0), Some(1009));
    assert_eq!(refused(&gateway, "too_large"), 1);
    let mut binary = Client::connect(addr, "board", TOKEN).await;
    binary
        .socket
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(close_of(&mut binary.socket).await.map(|c| c.0), Some(1008));
    let mut garbage = Client::connect(addr, "board", TOKEN).await;
    garbage.send_text("{\"type\":".into()).await;
    assert_eq!(close_of(&mut garbage.socket).await.map(|c| c.0), Some(1008));
    // A value too deep for any replica to read, a number out of range.
    for value in ["[".repeat(1000) + &"]".repeat(1000), "1e999999".to_string()] {
        let mut deep = Client::connect(addr, "board", TOKEN).await;
        let stamp = deep.stamp();
        deep.send_text(format!(
            "{{\"type\":\"set\",\"key\":\"d\",\"value\":{value},\"stamp\":\"{stamp}\"}}"
        ))
        .await;
        assert_eq!(close_of(&mut deep.socket).await.map(|c| c.0), Some(1008));
    }
    assert!(service.get("d").is_none());
    assert_eq!(refused(&gateway, "malformed"), 4);

    // A flood: closed once past the burst.
    let mut flood = Client::connect(addr, "board", TOKEN).await;
    for n in 0..500 {
        let text = json!({"type": "presence", "x": n, "y": n}).to_string();
        if flood.socket.send(Message::text(text)).await.is_err() {
            break;
        }
    }
    assert_eq!(close_of(&mut flood.socket).await.map(|c| c.0), Some(1008));
    assert_eq!(refused(&gateway, "rate_limited"), 1);

    // Past the per-address cap, once the token is checked: 1013. (`good`
    // holds one slot.)
    let mut held = Vec::new();
    for _ in 0..11 {
        held.push(Client::connect(addr, "board", TOKEN).await);
    }
    let mut over = Client::connect_silent(addr, "board", TOKEN).await;
    let (code, _) = close_of(&mut over.socket).await.expect("a close frame");
    assert_eq!(code, 1013);
    assert_eq!(refused(&gateway, "address_capacity"), 1);
    assert_eq!(
        metric(&gateway, "aether_bridge_connections{map=\"board\"}"),
        12
    );
    drop(held);

    // An unknown map: 404, counted.
    let response = support::get(addr, "/bridge/nope").await;
    assert_eq!(response.status, 404);
    assert_eq!(refused(&gateway, "unknown_map"), 1);

    // Through all of it, the good client kept working both ways.
    service.set_json("after", &"all").await.unwrap();
    assert_eq!(good.until("set", Some("after")).await["value"], "all");
    good.set("from-good", json!(1)).await;
    eventually("the service has from-good", || {
        service.get("from-good").is_some()
    })
    .await;
    eventually("the held connections were given back", || {
        metric(&gateway, "aether_bridge_connections{map=\"board\"}") == 1
    })
    .await;
    // /metrics answers with the bridge busy.
    assert_eq!(support::get(addr, "/metrics").await.status, 200);
    close_board(service, gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_cap_refuses_with_1013() {
    let aether = Aether::default();
    let limits = BridgeConfig {
        max_connections: 3,
        ..Default::default()
    };
    let gateway = start(&aether, bridged(limits)).await;
    let addr = gateway.addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::connect(addr, "board", TOKEN).await);
    }
    let mut over = Client::connect_silent(addr, "board", TOKEN).await;
    assert_eq!(close_of(&mut over.socket).await.map(|c| c.0), Some(1013));
    assert_eq!(refused(&gateway, "capacity"), 1);
    held.pop();
    eventually("a slot came back", || {
        metric(&gateway, "aether_bridge_connections{map=\"board\"}") == 2
    })
    .await;
    let mut again = Client::connect(addr, "board", TOKEN).await;
    again.set("k", json!(1)).await;
    gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_stops_reading_is_closed_and_counted() {
    let aether = Aether::default();
    let limits = BridgeConfig {
        send_timeout_ms: 300,
        ..Default::default()
    };
    let gateway = start(&aether, bridged(limits)).await;
    let addr = gateway.addr();
    let service = service_board(&aether).await;
    // Never reads: the gateway's sends fill the socket's buffers, then one
    // times out.
    let _stalled = Client::connect(addr, "board", TOKEN).await;
    let value = "v".repeat(16 * 1024);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut n = 0u32;
    while refused(&gateway, "slow") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not closed within 20 s"
        );
        service
            .set_json(&format!("k{}", n % 256), &value)
            .await
            .unwrap();
        n += 1;
        if n.is_multiple_of(64) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    close_board(service, gateway).await;
}

// ---- TLS -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_bridge_is_served_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let aether = Aether::default();
    let mut config = bridged(BridgeConfig::default());
    config.tls.cert = Some(cert_path);
    config.tls.key = Some(key_path);
    let gateway = start(&aether, config).await;
    let addr = gateway.addr();

    // Plain HTTP gets no answer.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(format!("ws://{addr}/bridge/board")),
    )
    .await
    .expect("a plain connection is dropped, not left hanging");
    assert!(plain.is_err(), "a plain WebSocket is refused");

    // TLS with the certificate as the root: the bridge speaks.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("the TLS handshake");
    let (mut socket, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{}/bridge/board", addr.port()),
        tls,
    )
    .await
    .expect("the upgrade over TLS");
    let auth = json!({"type": "auth", "token": TOKEN, "replica": "00000000000000aa"});
    socket.send(Message::text(auth.to_string())).await.unwrap();
    let hello = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let hello: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello");
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_generated_token_is_long_and_random() {
    let aether = Aether::default();
    let config = GatewayConfig {
        bridge: BridgeConfig {
            maps: vec!["board".into()],
            ..Default::default()
        },
        ..config()
    };
    let one = start(&aether, config.clone()).await;
    let token = one.bridge_token().unwrap().to_string();
    assert_eq!(token.len(), 32);
    one.stop().await.unwrap();
    let two = start(&aether, config).await;
    assert_ne!(two.bridge_token().unwrap(), token);
    two.stop().await.unwrap();
}

/// The gateway answers with several small writes in a row (hello, then the
/// map): they go out at once, not after the page's delayed acknowledgement
/// of the first (some 40 ms each without TCP_NODELAY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_connect_without_waiting_for_delayed_acknowledgements() {
    let aether = Aether::default();
    let limits = BridgeConfig {
        max_connections: 512,
        max_connections_per_address: 512,
        ..Default::default()
    };
    let gateway = start(&aether, bridged(limits)).await;
    let mut pages = Vec::new();
    let mut took = Vec::new();
    for _ in 0..100 {
        let started = std::time::Instant::now();
        pages.push(Client::connect(gateway.addr(), "board", TOKEN).await);
        took.push(started.elapsed());
    }
    // Each page that joins is shown to all the others, so later connects
    // cost more on a loaded machine: the median page tells a delayed
    // acknowledgement (40 ms and more a connect) from that.
    took.sort();
    let median = took[took.len() / 2];
    eprintln!(
        "100 pages connected, each in {median:?} (median), {:?} at most",
        took[took.len() - 1]
    );
    assert!(median < Duration::from_millis(30), "a page took {median:?}");
    drop(pages);
    gateway.stop().await.unwrap();
}

/// One page's cursor reaches the others at most 20 times a second, and its
/// latest position always arrives: a page cannot multiply its message rate
/// by the number of pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_are_thinned_to_the_latest_and_the_latest_arrives() {
    let aether = Aether::default();
    let gateway = start(&aether, bridged(BridgeConfig::default())).await;
    let addr = gateway.addr();
    let mut mover = Client::connect(addr, "board", TOKEN).await;
    let mut watcher = Client::connect(addr, "board", TOKEN).await;
    let started = std::time::Instant::now();
    for n in 0..150 {
        mover
            .send(json!({"type": "presence", "x": n, "y": -n}))
            .await;
    }
    let mut seen = Vec::new();
    loop {
        let message = watcher.until("presence", None).await;
        let Some(x) = message["x"].as_i64() else {
            continue; // the mover shown as it came, before it moved
        };
        seen.push(x);
        if message["x"] == 149 {
            assert_eq!(message["y"], -149);
            break;
        }
    }
    // At most one per 50 ms (and the first at once) while it moved.
    let allowed = started.elapsed().as_millis() as usize / 50 + 2;
    assert!(
        seen.len() <= allowed,
        "{} cursor messages in {:?}: {seen:?}",
        seen.len(),
        started.elapsed()
    );
    assert!(seen.len() < 150, "not thinned: {seen:?}");
    gateway.stop().await.unwrap();
}

/// A page's presence reaches pages of another gateway and services (as
/// `<node>/<slot>`), a service's reaches pages, and each goes when its
/// page closes or its slot is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_pages_of_other_gateways_and_services() {
    let aether = Aether::default();
    let one = start(&aether, bridged(BridgeConfig::default())).await;
    let two = start(&aether, bridged(BridgeConfig::default())).await;
    let service = service_board(&aether).await;
    let mut ada = Client::connect(one.addr(), "board", TOKEN).await;
    let mut far = Client::connect(two.addr(), "board", TOKEN).await;
    let ada_id = ada.received[0]["id"].as_str().unwrap().to_string();
    ada.send(json!({"type": "presence", "x": 5, "y": 6, "value": {"name": "Ada"}}))
        .await;
    // Until far sees Ada's page through the replicas (a page of its own
    // gateway never shows a slash).
    let remote = loop {
        let seen = far.until("presence", None).await;
        if seen["id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{ada_id}"))
            && seen.get("value").is_some()
        {
            break seen;
        }
    };
    assert_eq!(
        (&remote["x"], &remote["y"], &remote["value"]),
        (&json!(5), &json!(6), &json!({"name": "Ada"})),
        "{remote}"
    );
    assert!(
        remote["color"]
            .as_str()
            .is_some_and(|c| c.starts_with("hsl("))
    );
    let remote_id = remote["id"].as_str().unwrap().to_string();
    // The service sees it as the gateway's presence value in the page's slot.
    eventually("the service sees Ada's page", || {
        service.presences().iter().any(|p| {
            format!("{}/{}", p.node, p.slot) == remote_id
                && serde_json::from_slice::<Value>(&p.value).unwrap()["value"]
                    == json!({"name": "Ada"})
        })
    })
    .await;
    // A service's value reaches every page, with a color of its own.
    service
        .set_presence_json("status", &json!({"busy": true}))
        .unwrap();
    for page in [&mut ada, &mut far] {
        let seen = loop {
            let seen = page.until("presence", None).await;
            if seen["id"] == "service/status" {
                break seen;
            }
        };
        assert_eq!(seen["value"], json!({"busy": true}), "{seen}");
        assert!(seen.get("x").is_none(), "a service has no cursor: {seen}");
        assert!(seen["color"].is_string());
    }
    // A page that comes later is told of both at once.
    let mut late = Client::connect(two.addr(), "board", TOKEN).await;
    let mut told = BTreeSet::new();
    let want = [remote_id.clone(), "service/status".to_string()];
    while !want.iter().all(|id| told.contains(id)) {
        let seen = late.until("presence", None).await;
        told.insert(seen["id"].as_str().unwrap().to_string());
    }
    // And of far, its neighbour on this gateway (an id without a slash).
    let far_id = far.received[0]["id"].as_str().unwrap().to_string();
    while !told.contains(&far_id) {
        let seen = late.until("presence", None).await;
        told.insert(seen["id"].as_str().unwrap().to_string());
    }
    // Each goes: a page closed, a slot cleared.
    ada.socket.close(None).await.unwrap();
    loop {
        let gone = far.until("presence-leave", None).await;
        if gone["id"] == remote_id.as_str() {
            break;
        }
    }
    eventually("the service lost Ada's page", || {
        service
            .presences()
            .iter()
            .all(|p| format!("{}/{}", p.node, p.slot) != remote_id)
    })
    .await;
    service.clear_presence("status").unwrap();
    assert_eq!(
        far.until("presence-leave", None).await["id"],
        "service/status"
    );
    service.close().await;
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

/// Pages flooding presence within every limit (large values, often) do not
/// flood the others: a page is sent the others' presence within its
/// allowance of bytes, each other's latest in turn, so an honest page's
/// name still arrives, seconds late at worst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_flood_delays_honest_pages_without_burying_them() {
    let (_aether, gateway, service) = board().await;
    let addr = gateway.addr();
    let mut watcher = Client::connect(addr, "board", TOKEN).await;
    let mut honest = Client::connect(addr, "board", TOKEN).await;
    let honest_id = honest.received[0]["id"].as_str().unwrap().to_string();
    let mut flood = Vec::new();
    for _ in 0..30 {
        flood.push(Client::connect(addr, "board", TOKEN).await);
    }
    let pad = "p".repeat(3_800);
    let flooding = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_secs(4) {
            for page in &mut flood {
                page.send(json!({"type": "presence", "x": n, "value": {"pad": pad}}))
                    .await;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        flood
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    honest
        .send(json!({"type": "presence", "value": {"name": "Ada"}}))
        .await;
    let sent = std::time::Instant::now();
    // Read what the watcher is sent for 4 s: the bytes, and when Ada's
    // name came.
    let (mut bytes, mut ada) = (0, None);
    while sent.elapsed() < Duration::from_secs(4) {
        let Some(message) = watcher.try_next(Duration::from_millis(200)).await else {
            continue;
        };
        if message["type"] == "presence" {
            bytes += message.to_string().len();
            if message["id"] == honest_id.as_str() && message["value"]["name"] == "Ada" {
                ada.get_or_insert(sent.elapsed());
            }
        }
    }
    let flood = flooding.await.unwrap();
    let ada = ada.expect("the honest page's name arrived within 4 s of the flood");
    // 30 pages of 4 KB, 16 a second: about 2 MB/s offered; the watcher is
    // sent at most its allowance (256 KiB a second, 256 KiB at once) over
    // the 4.5 s since the flood began (read in 4 s, with what waited).
    let most = 256 * 1024 * 6;
    assert!(
        bytes <= most,
        "{bytes} bytes of presence in 4 s (at most {most})"
    );
    assert!(
        bytes >= 256 * 1024,
        "{bytes} bytes: the flood was not sent at all?"
    );
    eprintln!("presence flood: {bytes} bytes in 4 s to a page, Ada's name after {ada:?}");
    drop(flood);
    close_board(service, gateway).await;
}

/// A presence value past the limit closes the page with 1009; one nested
/// too deep with 1008; both counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_values_are_held_to_their_limits() {
    let (_aether, gateway, service) = board().await;
    let addr = gateway.addr();
    let limit = {
        let c = Client::connect(addr, "board", TOKEN).await;
        c.received[0]["limits"]["max_presence_bytes"]
            .as_u64()
            .unwrap() as usize
    };
    let fits = "x".repeat(limit - 2);
    let mut ok = Client::connect(addr, "board", TOKEN).await;
    ok.send(json!({"type": "presence", "value": fits})).await;
    ok.send(json!({"type": "sync", "id": 1})).await;
    ok.until("synced", None).await;
    let mut big = Client::connect(addr, "board", TOKEN).await;
    big.send(json!({"type": "presence", "value": "x".repeat(limit - 1)}))
        .await;
    assert_eq!(close_of(&mut big.socket).await.map(|c| c.0), Some(1009));
    let mut deep = Client::connect(addr, "board", TOKEN).await;
    let nested = format!("{}{}", "[".repeat(200), "]".repeat(200));
    deep.send_text(format!(r#"{{"type":"presence","value":{nested}}}"#))
        .await;
    assert_eq!(close_of(&mut deep.socket).await.map(|c| c.0), Some(1008));
    assert_eq!(refused(&gateway, "too_large"), 1);
    eventually("the page that fits is shown to the service", || {
        service
            .presences()
            .iter()
            .any(|p| serde_json::from_slice::<Value>(&p.value).unwrap()["value"] == json!(fits))
    })
    .await;
    close_board(service, gateway).await;
}

// ---- sockets without the token ---------------------------------------------

/// Silent sockets from eight addresses, reopened as fast as the gateway
/// closes them and above every cap, never take the places of pages with
/// the token: each of ten pages that sends it at once gets the map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_never_take_the_places_of_pages_with_the_token() {
    let aether = Aether::default();
    let limits = BridgeConfig {
        max_connections: 32,
        max_connections_per_address: 32,
        ..Default::default()
    };
    let gateway = start(&aether, bridged(limits)).await;
    let addr = gateway.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for n in 2..10u8 {
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            // Each address holds up to 40 silent sockets, the oldest
            // dropped for a new one; bounded by the flag and 60 s.
            let from = std::net::IpAddr::from([127, 0, 0, n]);
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut held = std::collections::VecDeque::new();
            let mut opened = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                if let Some(socket) = open_from(addr, "board", from).await {
                    held.push_back(socket);
                    opened += 1;
                }
                if held.len() > 40 {
                    held.pop_front();
                }
            }
            opened
        }));
    }
    // The flood holds everything it can before the first page comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut live = 0;
    for _ in 0..10 {
        let mut page = Client::connect_silent(addr, "board", TOKEN).await;
        let hello = page.try_next(Duration::from_secs(5)).await;
        let snapshot = page.try_next(Duration::from_secs(5)).await;
        if hello.is_some_and(|m| m["type"] == "hello")
            && snapshot.is_some_and(|m| m["type"] == "snapshot")
        {
            live += 1;
        }
        drop(page);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut opened = 0;
    for worker in flood {
        opened += worker.await.unwrap();
    }
    eprintln!("the flood opened {opened} sockets");
    assert_eq!(live, 10, "pages with the token that got the map");
    assert!(opened > 400, "the flood went above every cap: {opened}");
    assert!(
        refused(&gateway, "evicted") > 0,
        "the oldest silent sockets were closed"
    );
    gateway.stop().await.unwrap();
}

// ---- memory ----------------------------------------------------------------

/// A map past `max_keys` refuses a page's write of a new key (`full`):
/// answered with `refused`, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_map_refuses_a_pages_new_key() {
    let mut settings = aether_core::AetherConfig::default();
    settings.state.max_keys = 2;
    let aether = Aether::new(settings).unwrap();
    let gateway = start(&aether, bridged(BridgeConfig::default())).await;
    let mut page = Client::connect(gateway.addr(), "board", TOKEN).await;
    page.set("a", json!(1)).await;
    page.set("b", json!(2)).await;
    page.set("c", json!(3)).await;
    let refusal = page.until("refused", Some("c")).await;
    assert_eq!(refusal["reason"], "full");
    assert_eq!(
        metric(&gateway, "aether_bridge_writes_total{outcome=\"full\"}"),
        1
    );
    // A key held is still written.
    page.set("a", json!(4)).await;
    let other = Client::connect(gateway.addr(), "board", TOKEN).await;
    assert_eq!(other.received[1]["entries"]["a"]["value"], 4);
    assert!(other.received[1]["entries"].get("c").is_none());
    gateway.stop().await.unwrap();
}

/// Many pages connecting to a large map at once share one snapshot text:
/// it is built once per version of the map, not once per page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_share_one_snapshot_per_version_of_the_map() {
    let aether = Aether::default();
    // Snapshots of about 1 MiB, at most 2 MiB of them in flight: the
    // pages take turns.
    let limits = BridgeConfig {
        max_unauthenticated_per_address: 32,
        max_snapshot_bytes_in_flight: 2 << 20,
        ..Default::default()
    };
    let gateway = start(&aether, bridged(limits)).await;
    let addr = gateway.addr();
    let service = service_board(&aether).await;
    let value = "v".repeat(16 * 1024);
    for n in 0..64 {
        service.set_json(&format!("k{n}"), &value).await.unwrap();
    }
    // The gateway's replica holds them all before a page connects (on a
    // loaded machine its task may still be applying the last ones).
    service.flush(Duration::from_secs(10)).await.unwrap();
    let first = Client::connect(addr, "board", TOKEN).await;
    assert_eq!(first.received[1]["entries"].as_object().unwrap().len(), 64);
    let pages =
        futures_util::future::join_all((0..24).map(|_| Client::connect(addr, "board", TOKEN)))
            .await;
    for page in &pages {
        assert_eq!(page.received[1], first.received[1]);
        assert!(
            page.longest < 400 * 1024,
            "no message is as large as the map: {}",
            page.longest
        );
    }
    assert_eq!(
        metric(&gateway, "aether_bridge_snapshots_built_total"),
        1,
        "one snapshot for 25 pages"
    );
    // A change: the next page gets a new one.
    service.set_json("k64", &1).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut later = Client::connect(addr, "board", TOKEN).await;
    while later.received[1]["entries"].get("k64").is_none() {
        assert!(std::time::Instant::now() < deadline, "k64 never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
        later = Client::connect(addr, "board", TOKEN).await;
    }
    assert_eq!(metric(&gateway, "aether_bridge_snapshots_built_total"), 2);
    drop(pages);
    close_board(service, gateway).await;
}

// ---- who a page may speak for ----------------------------------------------

/// A page writes shared keys only: a node-owned key is refused
/// (`not_owner`), the gateway's own node's too, and never reaches the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_may_not_write_the_gateways_node_keys() {
    let (_aether, gateway, service) = board().await;
    let mut page = Client::connect(gateway.addr(), "board", TOKEN).await;
    eventually("the service sees the gateway's replica", || {
        !service.peers().is_empty()
    })
    .await;
    let node = service.peers()[0].clone();
    let key = format!("node/{node}/status");
    let stamp = page.stamp();
    page.send(json!({"type": "set", "key": key, "value": "forged", "stamp": stamp}))
        .await;
    assert_eq!(
        page.until("refused", Some(&key)).await["reason"],
        "not_owner"
    );
    page.set("after", json!(1)).await;
    eventually("the service has after", || service.get("after").is_some()).await;
    assert!(service.get(&key).is_none(), "the forged node key spread");
    close_board(service, gateway).await;
}

/// A change stamped with a page's replica id that the page did not send
/// itself (here a service's merge) reaches that page: the bridge leaves
/// out only what the connection itself merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_gets_every_change_it_did_not_send_whatever_its_stamp() {
    let (_aether, gateway, service) = board().await;
    let mut victim = Client::connect(gateway.addr(), "board", TOKEN).await;
    let node = u64::from_str_radix(&victim.replica, 16).unwrap();
    let forged = aether_core::state::Stamp {
        physical_ns: now_ns(),
        logical: 7,
        node,
    };
    service
        .merge("title", Some("\"forged\"".into()), forged)
        .await
        .unwrap();
    let seen = victim.until("set", Some("title")).await;
    assert_eq!(seen["value"], "forged");
    // Its own writes still do not come back.
    victim.set("own", json!(1)).await;
    eventually("the service has own", || service.get("own").is_some()).await;
    assert!(
        victim.try_next(Duration::from_millis(300)).await.is_none(),
        "a page does not get its own write back"
    );
    close_board(service, gateway).await;
}

/// A replica id another open page holds is refused at `auth` (1008,
/// `replica_in_use`, counted), and a write stamped in another open page's
/// name is refused (`stamp`); a stamp of a page that is not connected (an
/// offline write relayed from the cache) is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_may_not_speak_for_another_open_page() {
    let (_aether, gateway, service) = board().await;
    let addr = gateway.addr();
    let mut victim = Client::connect(addr, "board", TOKEN).await;
    let mut twin = Client::connect_as(addr, "board", TOKEN, &victim.replica.clone()).await;
    assert_eq!(
        close_of(&mut twin.socket).await,
        Some((1008, "replica_in_use".to_string()))
    );
    assert_eq!(refused(&gateway, "replica_in_use"), 1);

    let mut forger = Client::connect(addr, "board", TOKEN).await;
    let theirs = stamp(now_ns(), 3, &victim.replica);
    forger
        .send(json!({"type": "set", "key": "k", "value": "forged", "stamp": theirs}))
        .await;
    assert_eq!(forger.until("refused", Some("k")).await["reason"], "stamp");
    assert_eq!(
        metric(&gateway, "aether_bridge_writes_total{outcome=\"stamp\"}"),
        1
    );
    // An earlier page load of this browser, not connected now: taken.
    let offline = stamp(now_ns(), 0, "00000000000000f1");
    forger
        .send(json!({"type": "set", "key": "k", "value": "offline", "stamp": offline}))
        .await;
    eventually("the service has the offline write", || {
        service.get_json::<String>("k").unwrap().as_deref() == Some("offline")
    })
    .await;
    assert_eq!(victim.until("set", Some("k")).await["value"], "offline");
    // Once the victim is gone, its id is free again.
    let id = victim.replica.clone();
    victim.socket.close(None).await.unwrap();
    drop(victim);
    let mut back = None;
    for _ in 0..100 {
        let mut again = Client::connect_as(addr, "board", TOKEN, &id).await;
        if again
            .try_next(Duration::from_secs(5))
            .await
            .is_some_and(|m| m["type"] == "hello")
        {
            back = Some(again);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back.is_some(), "the id was given back");
    close_board(service, gateway).await;
}

/// Two writes of one key with equal stamps and different values (possible
/// only with a forged id): every replica keeps the same one, and the page
/// whose write lost is answered with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_stamps_settle_on_one_value_everywhere() {
    let (_aether, gateway, service) = board().await;
    let mut page = Client::connect(gateway.addr(), "board", TOKEN).await;
    let same = stamp(now_ns(), 0, "00000000000000f2");
    page.send(json!({"type": "set", "key": "tie", "value": "b", "stamp": same}))
        .await;
    eventually("the service has b", || service.get("tie").is_some()).await;
    page.send(json!({"type": "set", "key": "tie", "value": "a", "stamp": same}))
        .await;
    let answer = page.until("set", Some("tie")).await;
    assert_eq!(
        (answer["value"].clone(), answer["stamp"].clone()),
        (json!("b"), json!(same))
    );
    assert_eq!(
        service.get_json::<String>("tie").unwrap().as_deref(),
        Some("b")
    );
    close_board(service, gateway).await;
}

/// A mistyped map is told as such (a page would otherwise take the 404 of
/// its upgrade for a gateway that is down), and a plain request still
/// gets the 404; a close says its reason first, as the client reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_map_and_each_close_say_why() {
    let aether = Aether::default();
    let limits = BridgeConfig {
        messages_per_s: 5,
        burst: 5,
        ..Default::default()
    };
    let gateway = start(&aether, bridged(limits)).await;
    let addr = gateway.addr();
    let mut typo = open(addr, "bord").await;
    assert_eq!(
        close_of(&mut typo).await,
        Some((1008, "unknown_map".to_string()))
    );
    assert_eq!(refused(&gateway, "unknown_map"), 1);
    assert_eq!(get(addr, "/bridge/bord").await.status, 404);

    let mut wrong = Client::connect_silent(addr, "board", "not-the-token").await;
    assert_eq!(
        close_of(&mut wrong.socket).await,
        Some((1008, "unauthorized".to_string()))
    );

    let mut fast = Client::connect(addr, "board", TOKEN).await;
    for n in 0..20 {
        let set = json!({"type": "set", "key": format!("k{n}"), "value": n, "stamp": fast.stamp()});
        // The gateway closes it part way: later sends may fail.
        if fast
            .socket
            .send(Message::text(set.to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = close_of(&mut fast.socket).await.expect("a close frame");
    assert_eq!(code, 1008);
    assert!(reason.starts_with("rate_limited: "), "{reason}");

    let mut odd = Client::connect(addr, "board", TOKEN).await;
    odd.send(
        json!({"type": "set", "key": "k", "value": 1, "stamp": stamp_now(), "prev": "yesterday"}),
    )
    .await;
    let (code, reason) = close_of(&mut odd.socket).await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (1008, "malformed: bad prev"));
    gateway.stop().await.unwrap();
}

/// Tokens with rights: a read-only token reads the map live and each of
/// its writes is refused as `forbidden` (answered with the entry, counted);
/// a token with prefixes writes under them only; a token for other maps
/// opens none here (unauthorized); the bridge's own token writes anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_open_their_maps_and_write_within_their_rights() {
    const VIEWER: &str = "a-viewer-token-of-the-tests-0001";
    const CARDS: &str = "a-cards-token-of-the-tests-00002";
    const NOTES: &str = "a-notes-token-of-the-tests-00003";
    let aether = Aether::default();
    let token = |token: &str, maps: &[&str], read_only: bool, prefixes: &[&str]| {
        aether_gateway::BridgeToken {
            token: token.into(),
            maps: (!maps.is_empty()).then(|| maps.iter().map(|m| m.to_string()).collect()),
            read_only,
            prefixes: (!prefixes.is_empty())
                .then(|| prefixes.iter().map(|p| p.to_string()).collect()),
        }
    };
    let gateway = start(
        &aether,
        GatewayConfig {
            bridge: BridgeConfig {
                token: Some(TOKEN.into()),
                maps: vec!["board".into(), "notes".into()],
                tokens: vec![
                    token(VIEWER, &[], true, &[]),
                    token(CARDS, &["board"], false, &["cards/"]),
                    token(NOTES, &["notes"], false, &[]),
                ],
                ..Default::default()
            },
            ..config()
        },
    )
    .await;
    let service = service_board(&aether).await;
    let addr = gateway.addr();
    service.set_json("cards/1", &"first").await.unwrap();

    // Read-only: the map comes, changes come, writes are refused.
    let mut viewer = Client::connect(addr, "board", VIEWER).await;
    assert_eq!(viewer.received[1]["entries"]["cards/1"]["value"], "first");
    let stamp = viewer.stamp();
    viewer
        .send(json!({"type": "set", "key": "cards/1", "value": "mine", "stamp": stamp}))
        .await;
    let refusal = viewer.until("refused", Some("cards/1")).await;
    assert_eq!(refusal["reason"], "forbidden");
    assert_eq!(
        viewer.until("set", Some("cards/1")).await["value"],
        "first",
        "answered with the entry"
    );
    let stamp = viewer.stamp();
    viewer
        .send(json!({"type": "writes", "writes": [{"key": "title", "deleted": true, "stamp": stamp}]}))
        .await;
    assert_eq!(
        viewer.until("refused", Some("title")).await["reason"],
        "forbidden"
    );
    service.set_json("cards/2", &"second").await.unwrap();
    assert_eq!(
        viewer.until("set", Some("cards/2")).await["value"],
        "second"
    );

    // Prefixes: under them taken, elsewhere refused.
    let mut cards = Client::connect(addr, "board", CARDS).await;
    let stamp = cards.stamp();
    let outside = cards.stamp();
    cards
        .send(json!({"type": "writes", "writes": [
            {"key": "cards/3", "value": "third", "stamp": stamp},
            {"key": "title", "value": "not mine", "stamp": outside},
        ]}))
        .await;
    assert_eq!(
        cards.until("refused", Some("title")).await["reason"],
        "forbidden"
    );
    eventually("the card written under its prefix", || {
        service
            .get_json::<String>("cards/3")
            .ok()
            .flatten()
            .as_deref()
            == Some("third")
    })
    .await;
    assert!(service.get("title").is_none());

    // A token for other maps opens none here; the bridge's own writes.
    let mut wrong = open(addr, "board").await;
    let auth = json!({"type": "auth", "token": NOTES, "replica": "00000000000000c1"});
    wrong.send(Message::text(auth.to_string())).await.unwrap();
    let (code, reason) = close_of(&mut wrong).await.expect("a close frame");
    assert_eq!(code, 1008);
    assert!(reason.starts_with("unauthorized"), "{reason}");
    Client::connect(addr, "notes", NOTES).await;
    let mut owner = Client::connect(addr, "board", TOKEN).await;
    let stamp = owner.stamp();
    owner
        .send(json!({"type": "set", "key": "title", "value": "the board", "stamp": stamp}))
        .await;
    eventually("the bridge's own token writes anywhere", || {
        service.get("title").is_some()
    })
    .await;
    assert_eq!(
        metric(
            &gateway,
            "aether_bridge_writes_total{outcome=\"forbidden\"}"
        ),
        3
    );
    assert_eq!(refused(&gateway, "token"), 1);
    close_board(service, gateway).await;
}
