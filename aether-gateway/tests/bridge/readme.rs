//! The README's protocol block against the running gateway: every
//! message it shows is what the gateway sends and accepts.

use super::*;

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
