//! Scenario 4: in-process call, colony's fast path vs a bare ractor actor.

use std::sync::Arc;

use colony::ClusterCa;

use crate::certs::BoxError;
use crate::colony_side::{self, ColonyCaller, Trust};
use crate::load::{drive, Plan};
use crate::local::{self, RactorCaller};
use crate::stats::{paired_ratio, Summary};
use crate::table::{rate, time_us, times, Goal, Table, Want};

use super::*;

enum Local {
    Colony { ca: Arc<ClusterCa> },
    Ractor,
}

impl Contender for Local {
    fn label(&self) -> &str {
        match self {
            Local::Colony { .. } => "colony local call",
            Local::Ractor => "raw ractor call!",
        }
    }

    async fn run(&self, plan: Plan, payload: usize) -> Summary {
        let body = body(payload);
        let sample = match self {
            Local::Colony { ca } => {
                async {
                    let node = colony_side::start_server("local", Trust::Ca(ca), 1).await?;
                    let client = node.client();
                    let sample = drive(plan, || {
                        ColonyCaller::new(client.clone(), None, body.clone())
                    })
                    .await;
                    node.shutdown().await;
                    Ok::<_, BoxError>(sample)
                }
                .await
            }
            Local::Ractor => {
                async {
                    let actor = local::spawn_actor().await?;
                    let sample =
                        drive(plan, || RactorCaller::new(actor.clone(), body.clone())).await;
                    actor.stop(None);
                    Ok::<_, BoxError>(sample)
                }
                .await
            }
        };
        match sample {
            Ok(sample) => sample.summarise(plan.duration, payload),
            Err(e) => failed(self.label(), e),
        }
    }
}

/// Scenario 4: colony's in-process call vs a bare ractor actor, concurrency 1.
pub(crate) async fn local(settings: &Settings) -> Result<Section, BoxError> {
    let ca = Arc::new(ClusterCa::generate()?);
    let contenders = [Local::Colony { ca }, Local::Ractor];
    let mut notes = Vec::new();
    eprintln!("local: concurrency 1");
    let runs = alternate(
        "local",
        &contenders.each_ref(),
        settings,
        settings.plan(1),
        settings.payload,
        &mut notes,
    )
    .await;

    let mut table = Table::new(&[
        "system",
        "mean call",
        "p50",
        "p99",
        "calls/s",
        "colony time ÷ this",
    ]);
    let ratio = paired_ratio(
        &field(&runs[1], |s| s.throughput),
        &field(&runs[0], |s| s.throughput),
    );
    for (i, label) in ["colony local call", "raw ractor call!"].iter().enumerate() {
        if runs[i].is_empty() {
            continue;
        }
        let m = Summary::median_of(&runs[i]);
        table.row(vec![
            label.to_string(),
            time_us(m.mean_call_us()),
            time_us(m.p50_us),
            time_us(m.p99_us),
            rate(m.throughput),
            if i == 0 {
                "1.00×".into()
            } else {
                times(ratio)
            },
        ]);
        error_notes(&mut notes, "local", label, &runs[i]);
    }
    Ok(Section {
        title: "4. Local call, one process".into(),
        about: format!(
            "Concurrency 1, {}-byte payload. colony: `client.call(\"echo\", msg)` to a service \
             of one instance on the same node (no encoding). Raw: an actor answering \
             `ractor::call!` with the same handler body. Every run starts its own node or actor. \
             Mean call = window ÷ calls; latency percentiles include two clock reads per call.",
            settings.payload
        ),
        table,
        notes,
        goals: vec![Goal {
            id: "P4",
            what: "local call time, colony ÷ raw ractor".into(),
            target: 1.2,
            want: Want::AtMost,
            measured: ratio,
        }],
    })
}
