//! Subscriber processes: the bench binary started again as `colony-bench subscribe <kind> ...`.
//!
//! A colony subscriber child starts a node that joins the publishing node (`--at`) and spawns
//! two subscriber services on the scenario's subjects, one at-most-once and one at-least-once
//! (one process serves both colony columns; only the subject published to decides which one
//! works). A NATS subscriber child connects to `nats-server` (`--at`) and subscribes once.
//! With `--queue`, the subscriptions join that queue group.
//!
//! The child prints `listening <addr>` once subscribed, then answers commands read from stdin,
//! one line each: `run <n>` (count run n from now on; answers `ok`) and `report` (answers a
//! [`Report`] line). It exits when its stdin closes, as the server children do (see
//! `child.rs`), and the parent kills a child it drops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::certs::BoxError;
use crate::child::parse_ready;
use crate::tally::{Report, Tally};
use crate::tick::Mode;
use crate::{broker_side, nats_side};

/// How long a child may take to subscribe, or to answer a command.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Which system a subscriber child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SubKind {
    /// A colony node with an at-most-once and an at-least-once subscriber service.
    Colony,
    /// An async-nats client subscribed to `nats-server`.
    Nats,
}

/// The command line of a subscriber child.
#[derive(Debug, Clone, Args)]
pub(crate) struct SubscribeArgs {
    /// The system.
    #[arg(value_enum)]
    pub(crate) kind: SubKind,
    /// colony: the node to join; NATS: the server.
    #[arg(long)]
    pub(crate) at: SocketAddr,
    /// Directory holding the cluster CA written by the parent (colony).
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// The node's (or client's) name, distinct per child.
    #[arg(long)]
    pub(crate) name: String,
    /// The scenario, part of the subjects (`one`, `fan`, `queue`).
    #[arg(long)]
    pub(crate) scenario: String,
    /// Join this queue group.
    #[arg(long)]
    pub(crate) queue: Option<String>,
}

impl SubscribeArgs {
    /// The arguments after the executable.
    fn to_args(&self) -> Vec<std::ffi::OsString> {
        let kind = match self.kind {
            SubKind::Colony => "colony",
            SubKind::Nats => "nats",
        };
        let mut args: Vec<std::ffi::OsString> = vec![
            "subscribe".into(),
            kind.into(),
            "--at".into(),
            self.at.to_string().into(),
            "--dir".into(),
            self.dir.clone().into(),
            "--name".into(),
            self.name.clone().into(),
            "--scenario".into(),
            self.scenario.clone().into(),
        ];
        if let Some(queue) = &self.queue {
            args.extend(["--queue".into(), queue.into()]);
        }
        args
    }
}

/// The child's side: subscribe, then answer commands until stdin closes.
pub(crate) async fn serve(args: &SubscribeArgs) -> Result<(), BoxError> {
    let tally = Tally::shared();
    let queue = args.queue.as_deref();
    let (node, nats, addr) = match args.kind {
        SubKind::Colony => {
            let node = broker_side::subscriber_node(
                &args.dir,
                &args.name,
                args.at,
                &args.scenario,
                queue,
                tally.clone(),
            )
            .await?;
            let addr = node.addr();
            (Some(node), None, addr)
        }
        SubKind::Nats => {
            let pattern = Mode::Nats.pattern(&args.scenario);
            let client =
                nats_side::subscribe(args.at, &args.name, &pattern, queue, tally.clone()).await?;
            (None, Some(client), args.at)
        }
    };
    let out = &mut tokio::io::stdout();
    say(out, format!("listening {addr}")).await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = stdin.next_line().await {
        let mut words = line.split_whitespace();
        match (words.next(), words.next().map(str::parse::<u32>)) {
            (Some("run"), Some(Ok(run))) => {
                tally.lock().expect("tally lock").start(run);
                say(out, "ok".into()).await?;
            }
            (Some("report"), None) => {
                let report = tally.lock().expect("tally lock").report();
                say(out, report.to_line()).await?;
            }
            _ => say(out, format!("error: unknown command {line:?}")).await?,
        }
    }
    drop(nats);
    if let Some(node) = node {
        node.shutdown().await;
    }
    Ok(())
}

/// Writes one line to the parent.
async fn say(out: &mut tokio::io::Stdout, line: String) -> std::io::Result<()> {
    out.write_all(line.as_bytes()).await?;
    out.write_all(b"\n").await?;
    out.flush().await
}

/// A running subscriber child, seen from the parent.
#[derive(Debug)]
pub(crate) struct SubChild {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl SubChild {
    /// Starts the child and waits until it has subscribed.
    pub(crate) async fn start(args: &SubscribeArgs) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("child has no stdout")?).lines();
        let mut sub = Self {
            name: args.name.clone(),
            child,
            stdin,
            stdout,
        };
        let line = sub.read_line().await?;
        parse_ready(&line).ok_or_else(|| format!("{}: unexpected line {line:?}", args.name))?;
        Ok(sub)
    }

    async fn read_line(&mut self) -> Result<String, BoxError> {
        match tokio::time::timeout(ANSWER_TIMEOUT, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => Err(format!("subscriber {} exited", self.name).into()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(format!("subscriber {} did not answer in time", self.name).into()),
        }
    }

    async fn ask(&mut self, command: &str) -> Result<String, BoxError> {
        let stdin = self.stdin.as_mut().ok_or("subscriber stopped")?;
        stdin.write_all(format!("{command}\n").as_bytes()).await?;
        stdin.flush().await?;
        self.read_line().await
    }

    /// Makes the child count run `run` from now on.
    pub(crate) async fn start_run(&mut self, run: u32) -> Result<(), BoxError> {
        let answer = self.ask(&format!("run {run}")).await?;
        if answer == "ok" {
            Ok(())
        } else {
            Err(format!("subscriber {}: {answer}", self.name).into())
        }
    }

    /// The child's counters.
    pub(crate) async fn report(&mut self) -> Result<Report, BoxError> {
        let answer = self.ask("report").await?;
        Report::parse(&answer)
            .ok_or_else(|| format!("subscriber {}: unexpected report {answer:?}", self.name).into())
    }

    /// Closes the child's stdin and waits for it to leave; kills it if it lingers.
    pub(crate) async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
