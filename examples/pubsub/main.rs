//! Pub/sub you can watch: plain subscribers on two nodes each get every event, a queue group of
//! three spread over the nodes gets each event once, an at-least-once subscriber whose instance
//! panics gets the event again, and an event that fails every attempt ends as a dead letter.
//! Four nodes in one process, no broker to run, a few seconds; it checks what it claims.
//!
//! ```text
//! cargo run --release --example pubsub
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony::prelude::*;
use colony::{DeadLetter, Redelivery};
use serde::{Deserialize, Serialize};

/// Published by the shop for every new order: audit and billing want it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    id: u64,
}

impl Event for OrderPlaced {}

/// Published once an order is paid: shipping wants it, at least once.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPaid {
    id: u64,
}

impl Event for OrderPaid {}

/// Orders published to `orders.placed`.
const ORDERS: u64 = 30;
/// Shipping's instance panics on the first attempt of this one.
const FLAKY: u64 = 2;
/// Shipping refuses this one on every attempt.
const POISON: u64 = 13;
/// Shipping's attempts before a dead letter.
const ATTEMPTS: u32 = 3;

/// What every subscriber saw, for the report and the checks at the end.
#[derive(Default)]
struct Seen {
    /// Order ids by subscriber (`audit@node-1`...).
    orders: Mutex<BTreeMap<String, Vec<u64>>>,
    /// (order id, attempt) of each order shipped.
    shipped: Mutex<Vec<(u64, u32)>>,
    dead: Mutex<Vec<DeadLetter>>,
}

impl Seen {
    fn order(&self, by: &str, id: u64) {
        let mut orders = self.orders.lock().unwrap();
        orders.entry(by.to_string()).or_default().push(id);
    }

    /// Orders seen by the subscribers whose name starts with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        let orders = self.orders.lock().unwrap();
        orders
            .iter()
            .filter(|(by, _)| by.starts_with(prefix))
            .map(|(_, ids)| ids.len())
            .sum()
    }
}

/// `audit` and `billing`: note which order reached which node.
struct Recorder {
    id: String,
    seen: Arc<Seen>,
}

impl Subscriber<OrderPlaced> for Recorder {
    async fn handle(&mut self, order: OrderPlaced, _: &Context) -> Result<(), Error> {
        self.seen.order(&self.id, order.id);
        Ok(())
    }
}

/// `shipping`: at-least-once; crashes once on order FLAKY, never ships order POISON.
struct Shipping {
    seen: Arc<Seen>,
}

impl Subscriber<OrderPaid> for Shipping {
    async fn handle(&mut self, order: OrderPaid, ctx: &Context) -> Result<(), Error> {
        let (id, attempt) = (order.id, ctx.attempt());
        if id == FLAKY && attempt == 1 {
            println!("   shipping: order {id}, attempt {attempt}: the instance panics");
            panic!("shipping crashed on order {id}");
        }
        if id == POISON {
            println!("   shipping: order {id}, attempt {attempt}: refused (no such address)");
            return Err(Error::bad_request(format!("order {id}: no such address")));
        }
        println!("   shipping: order {id}, attempt {attempt}: shipped");
        self.seen.shipped.lock().unwrap().push((id, attempt));
        Ok(())
    }
}

/// `ops`: reads the dead letters.
struct Ops {
    seen: Arc<Seen>,
}

impl Subscriber<DeadLetter> for Ops {
    async fn handle(&mut self, dead: DeadLetter, ctx: &Context) -> Result<(), Error> {
        let order: OrderPaid = dead.event()?;
        println!(
            "   ops: a dead letter on {}: order {} published to {}, {} attempts by {}, last \
             error: {}",
            ctx.subject().unwrap_or("?"),
            order.id,
            dead.subject,
            dead.attempts,
            dead.service,
            dead.error
        );
        self.seen.dead.lock().unwrap().push(dead);
        Ok(())
    }
}

/// Starts `node-1`..`node-3` and their subscribers, as the table printed at the start says.
async fn subscribers(
    ca: &Arc<colony::ClusterCa>,
    seen: &Arc<Seen>,
) -> Result<Vec<Node>, Box<dyn std::error::Error + Send + Sync>> {
    let mut nodes: Vec<Node> = Vec::new();
    for name in ["node-1", "node-2", "node-3"] {
        let mut builder = Node::builder().name(name).ca(ca.clone());
        if let Some(first) = nodes.first() {
            builder = builder.seeds([first.addr().to_string()]);
        }
        let node = builder.start().await?;
        let recorder = |service: &str| {
            let (id, seen) = (format!("{service}@{name}"), seen.clone());
            move || Recorder {
                id: id.clone(),
                seen: seen.clone(),
            }
        };
        if name != "node-3" {
            node.service("audit")
                .subscribe::<OrderPlaced>("orders.placed")
                .spawn(recorder("audit"))
                .await?;
        }
        node.service("billing")
            .subscribe::<OrderPlaced>("orders.placed")
            .queue("billing")
            .spawn(recorder("billing"))
            .await?;
        nodes.push(node);
    }
    let seen_by_shipping = seen.clone();
    nodes[2]
        .service("shipping")
        .subscribe::<OrderPaid>("orders.paid")
        .redelivery(Redelivery {
            ack_wait: Duration::from_secs(5),
            max_attempts: ATTEMPTS,
            // Longer than the instance's restart (10 ms), so the redelivery finds it back.
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
        })
        .spawn(move || Shipping {
            seen: seen_by_shipping.clone(),
        })
        .await?;
    let seen_by_ops = seen.clone();
    nodes[0]
        .service("ops")
        .subscribe::<DeadLetter>("colony.dead.>")
        .spawn(move || Ops {
            seen: seen_by_ops.clone(),
        })
        .await?;
    Ok(nodes)
}

/// Step 1: plain subscriptions and a queue group.
async fn orders(client: &Client, seen: &Seen) -> Result<(), Error> {
    println!("\n1. the shop publishes {ORDERS} orders to orders.placed");
    for id in 1..=ORDERS {
        let published = client.publish("orders.placed", OrderPlaced { id }).await?;
        // Both audits and one billing member.
        assert_eq!(published.subscriptions, 3, "{published:?}");
        if id == 1 {
            println!(
                "   order 1 went to {} node(s), {} subscription(s): both audits, one billing",
                published.nodes, published.subscriptions
            );
        }
    }
    let all = ORDERS as usize;
    colony_examples::wait_for("the orders", || {
        seen.count("audit@") == 2 * all && seen.count("billing@") == all
    })
    .await;
    let orders = seen.orders.lock().unwrap().clone();
    for (by, ids) in &orders {
        println!("   {by:<16} got {:>2} orders", ids.len());
    }
    let expected: Vec<u64> = (1..=ORDERS).collect();
    for node in ["node-1", "node-2"] {
        let mut ids = orders[&format!("audit@{node}")].clone();
        ids.sort_unstable();
        assert_eq!(ids, expected, "audit@{node} gets every order, once");
    }
    let mut billed: Vec<u64> = orders
        .iter()
        .filter(|(by, _)| by.starts_with("billing@"))
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    billed.sort_unstable();
    assert_eq!(billed, expected, "the billing group gets each order once");
    for node in ["node-1", "node-2", "node-3"] {
        let share = orders.get(&format!("billing@{node}")).map_or(0, Vec::len);
        assert!(share >= all / 5, "billing@{node} got {share}: unbalanced");
    }
    println!("   each audit got all {ORDERS}; the three billing members shared them, none twice");
    Ok(())
}

/// Steps 2 and 3: at-least-once, a redelivery after a panic, a dead letter.
async fn payments(client: &Client, seen: &Seen) -> Result<(), Error> {
    println!("\n2. orders 1 to 4 are paid: shipping (at-least-once) gets them, one at a time");
    for id in 1..=4 {
        client.publish("orders.paid", OrderPaid { id }).await?;
        // Until shipping has acknowledged it (after a redelivery, for order FLAKY).
        client.flush(Duration::from_secs(10)).await?;
    }
    let shipped = seen.shipped.lock().unwrap().clone();
    assert_eq!(
        shipped,
        [(1, 1), (FLAKY, 2), (3, 1), (4, 1)],
        "each order shipped once; order {FLAKY} on its second attempt"
    );

    println!("\n3. order {POISON} is paid too, but shipping refuses it on every attempt");
    client
        .publish("orders.paid", OrderPaid { id: POISON })
        .await?;
    // Until its last attempt failed and the dead letter is published.
    client.flush(Duration::from_secs(10)).await?;
    colony_examples::wait_for("the dead letter", || !seen.dead.lock().unwrap().is_empty()).await;
    let dead = seen.dead.lock().unwrap();
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(dead[0].attempts, ATTEMPTS);
    assert_eq!(dead[0].service, "shipping");
    assert_eq!(dead[0].event::<OrderPaid>()?.id, POISON);
    Ok(())
}

async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The panic in shipping is on purpose: one line, not a backtrace. Any other panic (a
    // failed check) is reported as usual.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let what = info.payload().downcast_ref::<String>();
        match what.filter(|w| w.starts_with("shipping crashed")) {
            Some(what) => println!("   ({what}; its supervisor restarts the instance)"),
            None => report(info),
        }
    }));
    let started = Instant::now();
    let ca = Arc::new(colony::ClusterCa::generate()?);
    let seen = Arc::new(Seen::default());
    let nodes = subscribers(&ca, &seen).await?;
    // The publisher serves nothing: a client-only member.
    let shop = Node::builder()
        .name("shop")
        .ca(ca)
        .seeds([nodes[0].addr().to_string()])
        .client_only()
        .start()
        .await?;
    let visible = shop
        .registry()
        .wait_until(Duration::from_secs(30), |r| {
            r.instances("audit").len() == 2
                && r.instances("billing").len() == 3
                && r.instances("shipping").len() == 1
                && r.instances("ops").len() == 1
        })
        .await;
    assert!(visible, "the subscriptions did not reach the shop");
    println!(
        "a shop (the publisher) and three nodes; the shop knows every subscription after {} ms:",
        started.elapsed().as_millis()
    );
    for line in [
        "audit     node-1, node-2          orders.placed  plain: each gets every event",
        "billing   node-1, node-2, node-3  orders.placed  queue group: one member per event",
        "shipping  node-3                  orders.paid    at-least-once, 3 attempts",
        "ops       node-1                  colony.dead.>  dead letters",
    ] {
        println!("   {line}");
    }

    let client = shop.client();
    orders(&client, &seen).await?;
    payments(&client, &seen).await?;

    let health = nodes[2].health();
    let stats = health
        .services
        .iter()
        .find(|s| s.name == "shipping")
        .and_then(|s| s.subscriptions.first())
        .expect("shipping's subscription");
    println!(
        "\nshipping's counters on node-3: received {} (attempts), handled {}, failed {}",
        stats.received, stats.handled, stats.failed
    );
    // Orders 1 to 4 handled; order FLAKY's first attempt and POISON's every one failed.
    assert_eq!((stats.handled, stats.failed), (4, 1 + u64::from(ATTEMPTS)));

    // Each node leaves gracefully; all at once rather than one after another.
    let leaving: Vec<_> = std::iter::once(shop)
        .chain(nodes)
        .map(|node| tokio::spawn(node.shutdown()))
        .collect();
    for node in leaving {
        node.await?;
    }
    println!("\ndone in {} ms", started.elapsed().as_millis());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    colony_examples::init_tracing("error");
    tokio::spawn(demo()).await?
}
