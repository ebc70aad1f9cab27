//! tonic's side: a gRPC echo service over HTTP/2, with mutual TLS (rustls on ring) or in clear.
//!
//! No protoc: the messages are hand-written prost structs and the service and client are the
//! few lines tonic-build would generate for one unary method
//! (`colony.bench.Echo/Call(EchoRequest) returns (EchoReply)`), built on `tonic::server::Grpc`,
//! `tonic::client::Grpc` and `tonic_prost::ProstCodec`. A server can be told to fail every
//! call, and a client can balance over several servers (`Channel::balance_list`: tower's p2c,
//! no retries), for the resilience scenario.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::body::Body;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig,
};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::certs::{BoxError, Pki, SERVER_NAME};
use crate::colony_side::check;
use crate::load::Caller;

/// The method's path on the wire.
const METHOD: &str = "/colony.bench.Echo/Call";

/// Largest message either side accepts (tonic's default of 4 MiB is enough for the sweep; the
/// limit is raised to colony's 16 MiB so neither side is refused earlier than the other).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Concurrent HTTP/2 streams a client may open (hyper's default is 200, below the 256 tasks
/// of the largest cell; colony allows 4096 concurrent QUIC streams).
const MAX_STREAMS: u32 = 4096;

/// `message EchoRequest { uint64 id = 1; string body = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoRequest {
    /// Caller-chosen id, returned as is.
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    /// The payload.
    #[prost(string, tag = "2")]
    pub(crate) body: String,
}

/// `message EchoReply { uint64 id = 1; string body = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoReply {
    /// The request's id.
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    /// The request's payload.
    #[prost(string, tag = "2")]
    pub(crate) body: String,
}

/// What a failing server answers (with `Unavailable`).
const FAILURE: &str = "bench: this server fails every call";

/// The unary handler: hands the payload back (or, when `fail`, refuses every call).
struct EchoCall {
    fail: bool,
}

impl tonic::server::UnaryService<EchoRequest> for EchoCall {
    type Response = EchoReply;
    type Future = Ready<Result<Response<EchoReply>, Status>>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        if self.fail {
            return ready(Err(Status::unavailable(FAILURE)));
        }
        let req = request.into_inner();
        ready(Ok(Response::new(EchoReply {
            id: req.id,
            body: req.body,
        })))
    }
}

/// The HTTP service routing the one method, as generated servers do.
#[derive(Debug, Clone, Copy)]
struct EchoServer {
    fail: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl tower_service::Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != METHOD {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let fail = self.fail;
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default())
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
            Ok(grpc.unary(EchoCall { fail }, req).await)
        })
    }
}

/// Serves the echo service on a free loopback port, with mutual TLS when `pki` is given;
/// every call fails with `Unavailable` when `fail`.
///
/// The server runs in a spawned task; the returned address is where it listens.
pub(crate) async fn start_server(pki: Option<&Pki>, fail: bool) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = Server::builder().max_concurrent_streams(MAX_STREAMS);
    if let Some(pki) = pki {
        server = server.tls_config(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&pki.server_cert, &pki.server_key))
                .client_ca_root(Certificate::from_pem(&pki.ca_cert)),
        )?;
    }
    tokio::spawn(async move {
        if let Err(e) = server
            .serve_with_incoming(EchoServer { fail }, incoming)
            .await
        {
            eprintln!("tonic server stopped: {e}");
        }
    });
    Ok(addr)
}

/// Connects one HTTP/2 channel to the server at `addr` (shared by every load task, as one
/// QUIC connection is shared by every colony call).
pub(crate) async fn connect(addr: SocketAddr, pki: Option<&Pki>) -> Result<Channel, BoxError> {
    Ok(endpoint(addr, pki)?.connect().await?)
}

/// Deadline of a call over a balanced channel: bounds a run even if a call hangs.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a balanced channel's (re)connection to one server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One channel balancing over every server in `addrs` (`Channel::balance_list`: tower's power
/// of two choices, one lazily connected HTTP/2 connection per server, no retries), with mutual
/// TLS when `pki` is given and a per-call timeout.
pub(crate) fn connect_balanced(
    addrs: &[SocketAddr],
    pki: Option<&Pki>,
) -> Result<Channel, BoxError> {
    let endpoints = addrs
        .iter()
        .map(|&addr| {
            Ok(endpoint(addr, pki)?
                .timeout(CALL_TIMEOUT)
                .connect_timeout(CONNECT_TIMEOUT))
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    Ok(Channel::balance_list(endpoints.into_iter()))
}

fn endpoint(addr: SocketAddr, pki: Option<&Pki>) -> Result<Endpoint, BoxError> {
    let scheme = if pki.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?.tcp_nodelay(true);
    if let Some(pki) = pki {
        endpoint = endpoint.tls_config(
            ClientTlsConfig::new()
                .domain_name(SERVER_NAME)
                .ca_certificate(Certificate::from_pem(&pki.ca_cert))
                .identity(Identity::from_pem(&pki.client_cert, &pki.client_key)),
        )?;
    }
    Ok(endpoint)
}

/// One load task's calls on a shared channel.
pub(crate) struct TonicCaller {
    grpc: tonic::client::Grpc<Channel>,
    body: String,
    next_id: u64,
}

impl TonicCaller {
    /// Calls the echo method over `channel` with a `body` payload.
    pub(crate) fn new(channel: Channel, body: String) -> Self {
        let grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Self {
            grpc,
            body,
            next_id: 0,
        }
    }
}

impl Caller for TonicCaller {
    async fn call(&mut self) -> Result<(), String> {
        self.next_id += 1;
        let id = self.next_id;
        let req = EchoRequest {
            id,
            body: self.body.clone(),
        };
        self.grpc
            .ready()
            .await
            .map_err(|e| format!("channel not ready: {e}"))?;
        let reply = self
            .grpc
            .unary(
                Request::new(req),
                PathAndQuery::from_static(METHOD),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        check(id, self.body.len(), reply.id, reply.body.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echoes_with_and_without_tls() {
        let pki = Pki::generate().unwrap();
        for pki in [Some(&pki), None] {
            let addr = start_server(pki, false).await.unwrap();
            let channel = connect(addr, pki).await.unwrap();
            let mut caller = TonicCaller::new(channel, "z".repeat(100));
            caller.call().await.unwrap();
            caller.call().await.unwrap();
        }
    }

    /// A failing server refuses every call; a channel balanced over it and a working server
    /// fails some calls and serves the others (no retries), and over working servers only
    /// serves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_balanced_channel_spreads_and_does_not_retry() {
        let pki = Pki::generate().unwrap();
        let good = start_server(Some(&pki), false).await.unwrap();
        let bad = start_server(Some(&pki), true).await.unwrap();
        let other = start_server(Some(&pki), false).await.unwrap();

        let alone = connect(bad, Some(&pki)).await.unwrap();
        let error = TonicCaller::new(alone, "z".into())
            .call()
            .await
            .unwrap_err();
        assert!(error.contains(FAILURE), "{error}");

        let failed = failed_of_200(&[good, bad], &pki).await;
        // tower's p2c compares loads that tonic's connections report as 0: the choice is
        // random, so about half of the calls fail (none, or all, of 200: odds of 2^-199).
        assert!((1..200).contains(&failed), "{failed} of 200 failed");
        assert_eq!(failed_of_200(&[good, other], &pki).await, 0);
    }

    async fn failed_of_200(addrs: &[SocketAddr], pki: &Pki) -> u32 {
        let channel = connect_balanced(addrs, Some(pki)).unwrap();
        let mut caller = TonicCaller::new(channel, "z".into());
        let mut failed = 0;
        for _ in 0..200 {
            failed += u32::from(caller.call().await.is_err());
        }
        failed
    }

    /// Whether `error` is, or was caused by, a failure of tonic's transport (the TCP and TLS
    /// connection), rather than a status the server sent.
    fn is_transport_error(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if e.is::<tonic::transport::Error>() {
                return true;
            }
            next = e.source();
        }
        false
    }

    /// Connects and makes one echo call, keeping the error's type (TonicCaller flattens it).
    async fn connect_and_call(addr: SocketAddr, pki: &Pki) -> Result<EchoReply, BoxError> {
        let channel = connect(addr, Some(pki)).await?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let request = EchoRequest {
            id: 7,
            body: "z".into(),
        };
        let reply = grpc
            .unary(
                Request::new(request),
                PathAndQuery::from_static(METHOD),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await?;
        Ok(reply.into_inner())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_refuses_a_client_from_another_ca() {
        let pki = Pki::generate().unwrap();
        let stranger = Pki::generate().unwrap();
        let addr = start_server(Some(&pki), false).await.unwrap();

        // Control: on the same server, the client with the right certificate is served.
        let reply = connect_and_call(addr, &pki).await.unwrap();
        assert_eq!((reply.id, reply.body.as_str()), (7, "z"));

        // The same client with only its certificate and key swapped for another CA's.
        let mut wrong = pki.clone();
        wrong.client_cert = stranger.client_cert;
        wrong.client_key = stranger.client_key;
        // The handshake may complete on the client side before the server checks the
        // certificate: the failure shows on connect or on the first call, as a broken
        // connection (the server's TLS alert is not always read before the socket closes).
        let error = connect_and_call(addr, &wrong)
            .await
            .expect_err("a client from another CA must be refused");
        assert!(
            is_transport_error(error.as_ref()),
            "not a transport error: {error:?}"
        );
    }
}
