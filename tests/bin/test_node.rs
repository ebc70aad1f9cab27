//! `colony-test-node`: a node in its own process, for the multi-process tests.
//!
//! ```text
//! colony-test-node --ca-dir DIR [--name NAME] [--listen ADDR] [--seed ADDR]... [--service NAME]...
//! ```
//!
//! Starts a node on `127.0.0.1:0` trusting the CA in `DIR/ca.pem` (joining the cluster through
//! the seeds), runs the fixture service as `fixture` (2 instances) and under every `--service`
//! name, and the `inspect` service that reports this node's registry view; prints `LISTENING <addr>` on stdout, and serves until its stdin closes
//! (then shuts down gracefully and exits 0) or it is killed.

use std::io::Write;
use std::path::PathBuf;

use colony::Node;
use colony_tests::{init_tracing, start_fixture, Inspect, Inspector, FIXTURE, INSPECT};
use tokio::io::AsyncReadExt;

fn usage() -> ! {
    eprintln!(
        "usage: colony-test-node --ca-dir DIR [--name NAME] [--listen ADDR] [--seed ADDR]... \
         [--service NAME]..."
    );
    std::process::exit(2);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut ca_dir: Option<PathBuf> = None;
    let mut name = format!("child-{}", std::process::id());
    let mut seeds = Vec::new();
    let mut listen = "127.0.0.1:0".to_string();
    let mut services = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ca-dir" => ca_dir = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--name" => name = args.next().unwrap_or_else(|| usage()),
            "--seed" => seeds.push(args.next().unwrap_or_else(|| usage())),
            "--listen" => listen = args.next().unwrap_or_else(|| usage()),
            "--service" => services.push(args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    let Some(ca_dir) = ca_dir else { usage() };
    init_tracing();
    // The tests make handlers panic on purpose: one line on stderr is enough.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("colony-test-node: {info}");
    }));

    let node = Node::builder()
        .name(name.clone())
        .listen(listen)
        .ca_dir(ca_dir)
        .seeds(seeds)
        .start()
        .await
        .unwrap_or_else(|e| {
            eprintln!("colony-test-node: {e}");
            std::process::exit(1);
        });
    let _fixture = start_fixture(&node, FIXTURE, 2).await;
    for service in &services {
        start_fixture(&node, service, 1).await;
    }
    let inspector = Inspector {
        node: name,
        registry: node.registry().clone(),
    };
    node.service(INSPECT)
        .handler::<Inspect>()
        .spawn(move || inspector.clone())
        .await
        .expect("inspect service starts");

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "LISTENING {}", node.addr()).expect("write stdout");
        out.flush().expect("flush stdout");
    }

    // Serve until stdin reaches end of file (the test dropped its end, or died).
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    node.shutdown().await;
}
