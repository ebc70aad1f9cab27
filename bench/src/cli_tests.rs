//! Tests of the command line: parsing, defaults, and which scenarios each command runs.

use super::*;

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
    assert_eq!(parse_duration("2.5s").unwrap(), Duration::from_millis(2500));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("-1s").is_err());
}

#[test]
fn cli_accepts_every_command_and_options() {
    let cli = Cli::try_parse_from([
        "colony-bench",
        "rpc",
        "--duration",
        "1s",
        "--rounds",
        "3",
        "--concurrency",
        "4,8",
        "--instances",
        "8,64",
    ])
    .unwrap();
    let Command::Rpc(args) = &cli.command else {
        panic!("parsed {:?}", cli.command)
    };
    let s = Settings::from(args);
    assert_eq!(s.duration, Duration::from_secs(1));
    assert_eq!(s.warmup, Duration::from_millis(500));
    assert_eq!(s.rounds, 3);
    assert_eq!(s.concurrency, vec![4, 8]);
    assert_eq!(s.instances, vec![8, 64]);
    assert_eq!(s.sweep_sizes, vec![100, 10_000, 1_000_000]);
    assert_eq!(
        s.by_name,
        vec![Strategy::RoundRobin, Strategy::PowerOfTwoChoices]
    );
    assert_eq!(s.fleet_concurrency, 64);
    assert_eq!(s.faults.len(), 3);
    assert!(!cli.command.scenarios().sweep);
    for cmd in [
        "local",
        "seq",
        "sweep",
        "pick",
        "resilience",
        "actors",
        "supervision",
        "pubsub",
        "locks",
        "all",
    ] {
        assert!(Cli::try_parse_from(["colony-bench", cmd]).is_ok(), "{cmd}");
    }
    let all = Cli::try_parse_from(["colony-bench", "all"]).unwrap();
    assert!(all.command.scenarios().resilience && all.command.scenarios().pick);
    assert!(all.command.scenarios().supervision && all.command.scenarios().pubsub);
    assert!(all.command.scenarios().locks);
    let Command::Locks(args) = Cli::try_parse_from([
        "colony-bench",
        "locks",
        "--lock-pairs",
        "50",
        "--lock-clients",
        "4",
        "--lock-keys",
        "2",
        "--lock-ttl",
        "1500ms",
        "--lock-max-ttl",
        "3s",
        "--etcd-dir",
        "/dev/shm",
    ])
    .unwrap()
    .command
    else {
        panic!("not the locks command")
    };
    let l = LockSettings::from(&args);
    assert_eq!(
        (l.pairs, l.warmup_pairs, l.clients, l.keys),
        (50, 100, 4, 2)
    );
    assert_eq!(l.ttl, Duration::from_millis(1500));
    assert_eq!(l.max_ttl, Duration::from_secs(3));
    assert_eq!(l.wait, Duration::from_secs(10));
    assert_eq!(
        l.etcd_dir.as_deref(),
        Some(std::path::Path::new("/dev/shm"))
    );
    let Command::Supervision(args) = Cli::try_parse_from([
        "colony-bench",
        "supervision",
        "--panics",
        "20",
        "--callers",
        "4",
        "--mailbox",
        "8",
        "--flood-cap-mb",
        "200",
        "--duration",
        "2s",
    ])
    .unwrap()
    .command
    else {
        panic!("not the supervision command")
    };
    let s = SupervisionSettings::from(&args);
    assert_eq!((s.panics, s.default_panics, s.rounds), (20, 50, 2));
    assert_eq!((s.callers, s.mailbox), (4, 8));
    assert_eq!(s.cap_bytes, 200_000_000);
    assert_eq!(s.window, Duration::from_secs(2));
    let Command::Resilience(args) = Cli::try_parse_from([
        "colony-bench",
        "resilience",
        "--by-name",
        "none",
        "--fleet-concurrency",
        "8",
        "--faults",
        "kill,none",
    ])
    .unwrap()
    .command
    else {
        panic!("not the resilience command")
    };
    let s = Settings::from(&args);
    let p = PubSubSettings::from(&args);
    assert_eq!((p.subscribers, p.rate, p.colony_publishers), (3, 10_000, 1));
    assert!(s.by_name.is_empty());
    assert_eq!(s.fleet_concurrency, 8);
    assert_eq!(s.faults, vec![fault::Fault::Kill, fault::Fault::None]);
    assert!(Cli::try_parse_from(["colony-bench", "all", "--rounds", "0"]).is_err());
    let Command::Pubsub(args) = Cli::try_parse_from([
        "colony-bench",
        "pubsub",
        "--subscribers",
        "2",
        "--rate",
        "5000",
        "--publishers",
        "4",
        "--nats-publishers",
        "2",
    ])
    .unwrap()
    .command
    else {
        panic!("not the pubsub command")
    };
    let p = PubSubSettings::from(&args);
    assert_eq!((p.subscribers, p.rate, p.payload), (2, 5_000, 100));
    assert_eq!((p.colony_publishers, p.nats_publishers), (4, 2));
    let sub = Cli::try_parse_from([
        "colony-bench",
        "subscribe",
        "nats",
        "--at",
        "127.0.0.1:4222",
        "--dir",
        "/tmp/x",
        "--name",
        "n",
        "--scenario",
        "queue",
        "--queue",
        "workers",
    ])
    .unwrap();
    assert!(matches!(sub.command, Command::Subscribe(_)));
    let serve =
        Cli::try_parse_from(["colony-bench", "serve", "tonic-tls", "--dir", "/tmp/x"]).unwrap();
    assert!(matches!(
        serve.command,
        Command::Serve(ServeArgs {
            kind: ServerKind::TonicTls,
            ..
        })
    ));
}

#[test]
fn serve_options_survive_the_command_line() {
    let options = ServeOptions {
        instances: 3,
        name: "echo-1".into(),
        seed: Some("127.0.0.1:4000".parse().unwrap()),
        fail: true,
        lock_max_ttl: Some(Duration::from_millis(2500)),
    };
    let dir = std::path::Path::new("/tmp/x");
    let args = std::iter::once("colony-bench".into()).chain(options.args(ServerKind::Colony, dir));
    let Command::Serve(serve) = Cli::try_parse_from(args).unwrap().command else {
        panic!("not the serve command")
    };
    assert_eq!(serve.kind, ServerKind::Colony);
    assert_eq!(serve.dir, dir);
    assert_eq!(ServeOptions::from(&serve), options);
    let lone = ServeOptions::instances(64);
    let args = std::iter::once("colony-bench".into()).chain(lone.args(ServerKind::Colony, dir));
    let Command::Serve(serve) = Cli::try_parse_from(args).unwrap().command else {
        panic!("not the serve command")
    };
    assert_eq!(ServeOptions::from(&serve), lone);
}
