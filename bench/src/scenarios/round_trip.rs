//! Scenario 3: sequential round trip in one process, colony vs raw quinn loops.

use std::sync::Arc;

use colony::ClusterCa;

use crate::certs::{BoxError, Pki};
use crate::colony_side::{self, ColonyCaller, Trust};
use crate::load::{drive, Plan};
use crate::raw_quinn::{self, RawCaller, Shape};
use crate::stats::{paired_ratio, Summary};
use crate::table::{rate, time_us, times, Goal, Table, Want};

use super::*;

enum Sequential {
    Colony {
        ca: Arc<ClusterCa>,
    },
    Raw {
        label: &'static str,
        pki: Pki,
        shape: Shape,
    },
}

impl Contender for Sequential {
    fn label(&self) -> &str {
        match self {
            Sequential::Colony { .. } => "colony remote call",
            Sequential::Raw { label, .. } => label,
        }
    }

    async fn run(&self, plan: Plan, payload: usize) -> Summary {
        let sample = match self {
            Sequential::Colony { ca } => {
                async {
                    let server = colony_side::start_server("seq-server", Trust::Ca(ca), 1).await?;
                    let client = colony_side::start_client("seq-client", ca).await?;
                    let (caller, addr, body) = (client.client(), server.addr(), body(payload));
                    let sample = drive(plan, || {
                        ColonyCaller::new(caller.clone(), Some(addr), body.clone())
                    })
                    .await;
                    client.shutdown().await;
                    server.shutdown().await;
                    Ok::<_, BoxError>(sample)
                }
                .await
            }
            Sequential::Raw { pki, shape, .. } => {
                async {
                    let (server, addr) = raw_quinn::start_server(pki)?;
                    let (client, conn) = raw_quinn::connect(pki, addr).await?;
                    let sample =
                        drive(plan, || RawCaller::new(conn.clone(), *shape, payload)).await;
                    conn.close(0u32.into(), b"done");
                    client.close(0u32.into(), b"done");
                    server.close(0u32.into(), b"done");
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

/// Scenario 3: colony's remote call vs raw quinn loops, concurrency 1, one process.
pub(crate) async fn sequential(settings: &Settings) -> Result<Section, BoxError> {
    let ca = Arc::new(ClusterCa::generate()?);
    let pki = Pki::generate()?;
    let contenders = [
        Sequential::Colony { ca },
        Sequential::Raw {
            label: "raw quinn, stream per call",
            pki: pki.clone(),
            shape: Shape::StreamPerCall,
        },
        Sequential::Raw {
            label: "raw quinn, one stream",
            pki,
            shape: Shape::OneStream,
        },
    ];
    let mut notes = Vec::new();
    eprintln!("seq: concurrency 1");
    let runs = alternate(
        "seq",
        &contenders.each_ref(),
        settings,
        settings.plan(1),
        settings.payload,
        &mut notes,
    )
    .await;

    let labels = [
        "colony remote call",
        "raw quinn, stream per call",
        "raw quinn, one stream",
    ];
    let mut table = Table::new(&[
        "system",
        "mean round trip",
        "p50",
        "p99",
        "calls/s",
        "colony time ÷ this",
    ]);
    let colony_tput = field(&runs[0], |s| s.throughput);
    // Time ratio = inverse throughput ratio, paired by round.
    let time_ratio = |i: usize| paired_ratio(&field(&runs[i], |s| s.throughput), &colony_tput);
    for (i, label) in labels.iter().enumerate() {
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
                times(time_ratio(i))
            },
        ]);
        error_notes(&mut notes, "sequential", label, &runs[i]);
    }
    let goals = vec![
        Goal {
            id: "P3a",
            what: "sequential round trip, colony ÷ raw quinn stream per call".into(),
            target: 1.3,
            want: Want::AtMost,
            measured: time_ratio(1),
        },
        Goal {
            id: "P3b",
            what: "sequential round trip, colony ÷ raw quinn one stream".into(),
            target: 1.3,
            want: Want::AtMost,
            measured: time_ratio(2),
        },
    ];
    Ok(Section {
        title: "3. Sequential round trip, one process".into(),
        about: format!(
            "Concurrency 1, {}-byte payload, client and server endpoints in this process over \
             127.0.0.1. The raw quinn loops use the same TLS (1.3, ring, client certificates), \
             transport settings and framing as colony but send the payload bytes with no header, \
             codec or actor: the server echoes the frame. Every run starts its own endpoints. \
             Mean round trip = window ÷ calls.",
            settings.payload
        ),
        table,
        notes,
        goals,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario 4: in-process calls.
