//! At-least-once pub/sub between nodes in one process: nothing lost when handlers panic, dead
//! letters after the last attempt, and undecodable events counted (or dead-lettered) while the
//! subscriber goes on.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::{ContentType, Context, DeadLetter, Error, Redelivery, RestartPolicy, Subscriber};
use colony_tests::probe::*;
use colony_tests::*;

fn panics_on(id: u64) -> bool {
    id % 10 == 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_loses_nothing_when_a_subscriber_panics() {
    const N: u64 = 60;
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b"]).await;
    let policy = Redelivery {
        ack_wait: Duration::from_secs(10),
        max_attempts: 5,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    // Enough restarts that the panics never exhaust the budget.
    let restarts = RestartPolicy {
        max_restarts: 1000,
        ..RestartPolicy::default()
    };
    // One subscriber on the publisher's node, one on the other.
    let mut subscribers = Vec::new();
    for (node, name) in [(&nodes[0], "alo-here"), (&nodes[1], "alo-there")] {
        let calls = Calls::default();
        let service = spawn_probe(
            node.service(name)
                .restart_policy(restarts)
                .subscribe::<Job>("pay.*")
                .redelivery(policy),
            Probe {
                mode: Mode::PanicFirst(panics_on),
                ..Probe::new(&calls)
            },
        )
        .await;
        subscribers.push((name, service, calls));
    }
    see(&nodes, &["alo-here", "alo-there"], 1).await;

    for id in 0..N {
        let published = nodes[0]
            .client()
            .publish("pay.in", Job { id })
            .await
            .unwrap_or_else(|e| panic!("publish {id}: {e}"));
        assert_eq!(published.subscriptions, 2);
    }
    // Resolves once every delivery is acknowledged (or dead-lettered, which would show below).
    within("flush", nodes[0].client().flush(HANG_LIMIT))
        .await
        .expect("every at-least-once delivery acknowledged");
    assert_eq!(nodes[0].health().broker.unacknowledged, 0);

    let panicked: BTreeSet<u64> = (0..N).filter(|id| panics_on(*id)).collect();
    for (name, service, calls) in &subscribers {
        let handled: BTreeSet<u64> = calls.handled().into_iter().collect();
        assert_eq!(handled, ids(0..N), "{name}: every id handled");
        let all = calls.all();
        // Each of these panics whenever it comes on a first attempt (others queued behind a
        // panic may fail their first attempt too, the instance gone before they ran).
        assert!(
            all.iter().any(|c| !c.ok && c.attempt == 1),
            "{name}: some handler panicked"
        );
        for id in &panicked {
            let ok = all
                .iter()
                .find(|c| c.id == *id && c.ok)
                .expect("handled later");
            assert!(
                ok.attempt > 1,
                "{name}: job {id} was handled on attempt {}, after a panic",
                ok.attempt
            );
        }
        let s = stats(service, "pay.*");
        assert!(s.at_least_once);
        assert!(
            s.failed >= panicked.len() as u64,
            "{name}: each panic fails an attempt: {s:?}"
        );
        assert_eq!(s.dropped, 0, "{name}: {s:?}");
        let panics = all.iter().filter(|c| !c.ok).count() as u64;
        wait_until(
            || service.restarts() == panics,
            &format!("{name}: one restart per panic ({panics})"),
        )
        .await;
    }
    shutdown(nodes).await;
}

/// A dead letter as the morgue got it, with the subject it came on.
#[derive(Debug, Clone)]
struct Letter {
    on: String,
    letter: DeadLetter,
}

#[derive(Debug, Clone, Default)]
struct Morgue(Arc<Mutex<Vec<Letter>>>);

impl Subscriber<DeadLetter> for Morgue {
    async fn handle(&mut self, letter: DeadLetter, ctx: &Context) -> Result<(), Error> {
        self.0.lock().unwrap().push(Letter {
            on: ctx.subject().unwrap_or_default().to_string(),
            letter,
        });
        Ok(())
    }
}

impl Morgue {
    fn letters(&self) -> Vec<Letter> {
        self.0.lock().unwrap().clone()
    }
}

fn quick_retries(max_attempts: u32) -> Redelivery {
    Redelivery {
        ack_wait: Duration::from_secs(10),
        max_attempts,
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_always_fails_is_dead_lettered_after_its_last_attempt() {
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b", "c"]).await;
    let doomed = Calls::default();
    let doomed_svc = spawn_probe(
        nodes[1]
            .service("doomed")
            .subscribe::<Job>("pay.*")
            .redelivery(quick_retries(3)),
        Probe {
            mode: Mode::Fail,
            ..Probe::new(&doomed)
        },
    )
    .await;
    let custom = Calls::default();
    spawn_probe(
        nodes[2]
            .service("doomed-custom")
            .subscribe::<Job>("refund.*")
            .redelivery(quick_retries(2))
            .dead_letter("dl.refunds"),
        Probe {
            mode: Mode::Fail,
            ..Probe::new(&custom)
        },
    )
    .await;
    let morgue = Morgue::default();
    let m = morgue.clone();
    nodes[0]
        .service("morgue")
        .subscribe::<DeadLetter>("colony.dead.doomed")
        .subscribe::<DeadLetter>("dl.refunds")
        .spawn(move || m.clone())
        .await
        .expect("dead-letter subscriber starts");
    see(&nodes, &["doomed", "doomed-custom", "morgue"], 1).await;

    nodes[0]
        .client()
        .publish("pay.now", Job { id: 7 })
        .await
        .expect("publish");
    nodes[0]
        .client()
        .publish("refund.now", Job { id: 8 })
        .await
        .expect("publish");
    wait_until(|| morgue.letters().len() >= 2, "two dead letters").await;
    within("flush", nodes[0].client().flush(HANG_LIMIT))
        .await
        .expect("nothing left unacknowledged");

    let letters = morgue.letters();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let find = |service: &str| {
        letters
            .iter()
            .find(|l| l.letter.service == service)
            .unwrap_or_else(|| panic!("no dead letter from {service}: {letters:?}"))
            .clone()
    };
    let first = find("doomed");
    assert_eq!(
        first.on, "colony.dead.doomed",
        "the default dead-letter subject"
    );
    assert_eq!(first.letter.subject, "pay.now");
    assert_eq!(first.letter.attempts, 3);
    assert!(
        first.letter.error.contains("probe fails job 7"),
        "the last attempt's error: {:?}",
        first.letter.error
    );
    assert_eq!(first.letter.event::<Job>().expect("decodes"), Job { id: 7 });
    let second = find("doomed-custom");
    assert_eq!(second.on, "dl.refunds");
    assert_eq!(second.letter.subject, "refund.now");
    assert_eq!(second.letter.attempts, 2);
    assert_eq!(
        second.letter.event::<Job>().expect("decodes"),
        Job { id: 8 }
    );

    // Every attempt reached the handler, one after another, and failed.
    let attempts = |calls: &Calls| calls.all().iter().map(|c| c.attempt).collect::<Vec<_>>();
    assert_eq!(attempts(&doomed), [1, 2, 3]);
    assert_eq!(attempts(&custom), [1, 2]);
    assert_eq!(doomed.handled_count(), 0);
    let s = stats(&doomed_svc, "pay.*");
    assert_eq!((s.handled, s.failed), (0, 3), "{s:?}");
    assert_eq!(nodes[0].health().broker.unacknowledged, 0);
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_is_counted_and_the_subscriber_goes_on() {
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b"]).await;
    let morgue = Morgue::default();
    let m = morgue.clone();
    nodes[0]
        .service("morgue")
        .subscribe::<DeadLetter>("colony.dead.>")
        .spawn(move || m.clone())
        .await
        .unwrap();
    // At-most-once and at-least-once, on the publisher's node and on the other.
    let mut subs = Vec::new();
    for (node, name, alo) in [
        (0, "amo-here", false),
        (1, "amo-there", false),
        (0, "alo-here", true),
        (1, "alo-there", true),
    ] {
        let calls = Calls::default();
        let mut subscribing = nodes[node].service(name).subscribe::<Job>("shape.*");
        if alo {
            subscribing = subscribing.redelivery(quick_retries(2));
        }
        let service = spawn_probe(subscribing, Probe::new(&calls)).await;
        subs.push((name, alo, service, calls));
    }
    see(
        &nodes,
        &["morgue", "amo-here", "amo-there", "alo-here", "alo-there"],
        1,
    )
    .await;

    let wrong = r#"{"name": "not a job"}"#;
    let p = nodes[0]
        .client()
        .publish_json("shape.wrong", wrong)
        .await
        .expect("valid JSON is published whatever its shape");
    assert_eq!(p.subscriptions, 4);
    for (name, alo, service, _) in &subs {
        wait_until(
            || {
                let s = stats(service, "shape.*");
                if *alo {
                    s.failed >= 2
                } else {
                    s.dropped >= 1
                }
            },
            &format!("{name} to count the undecodable event"),
        )
        .await;
    }
    wait_until(
        || morgue.letters().len() >= 2,
        "the at-least-once ones dead-lettered",
    )
    .await;
    let mut letters = morgue.letters();
    letters.sort_by(|x, y| x.letter.service.cmp(&y.letter.service));
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (letter, service) in letters.iter().zip(["alo-here", "alo-there"]) {
        assert_eq!(letter.letter.service, service);
        assert_eq!(letter.on, format!("colony.dead.{service}"));
        assert_eq!(letter.letter.subject, "shape.wrong");
        assert_eq!(letter.letter.attempts, 2);
        assert!(
            letter.letter.error.contains("decode"),
            "the error says it did not decode: {:?}",
            letter.letter.error
        );
        assert_eq!(letter.letter.content_type, ContentType::Json);
        assert_eq!(
            letter.letter.body,
            wrong.as_bytes(),
            "the event as published"
        );
    }

    // Each goes on with the next event.
    nodes[0]
        .client()
        .publish("shape.right", Job { id: 42 })
        .await
        .unwrap();
    for (name, alo, service, calls) in &subs {
        wait_until(
            || calls.handled() == [42],
            &format!("{name} to handle the next event"),
        )
        .await;
        let s = stats(service, "shape.*");
        assert_eq!(s.handled, 1, "{name}: {s:?}");
        if *alo {
            assert_eq!((s.failed, s.dropped), (2, 0), "{name}: {s:?}");
        } else {
            assert_eq!((s.failed, s.dropped), (0, 1), "{name}: {s:?}");
        }
    }
    within("flush", nodes[0].client().flush(HANG_LIMIT))
        .await
        .expect("flush");
    shutdown(nodes).await;
}
