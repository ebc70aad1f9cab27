//! Calling services: in-process through the mailbox, or on another node over QUIC.

use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use colony_quic::frame;
use colony_quic::{OpenError, ReadError, WriteError};

use crate::codec::ContentType;
use crate::context::{Context, Metadata};
use crate::error::{Code, Error, Origin};
use crate::message::Message;
use crate::node::Shared;
use crate::service::{await_reply, call_encoded, downcast_reply, LocalService};
use crate::wire::{decode_header, encode_header, ReplyHeader, RequestHeader, MAX_HEADER};

/// Calls services, typed: `client.call("greeter", Hello { .. }).await?` returns `HelloReply`.
///
/// A call to a service on this node goes straight into an instance's mailbox with no encoding;
/// a call with [`Call::at`] goes to that node over QUIC. Both give the same replies and errors.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("node", &self.shared.name)
            .finish()
    }
}

impl Client {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Calls `service` wherever it runs: on this node through the mailbox if it runs here,
    /// otherwise on an instance from the cluster registry, over QUIC.
    pub async fn call<M: Message>(&self, service: &str, request: M) -> Result<M::Reply, Error> {
        self.request(service, request).send().await
    }

    /// Calls `service` on the node at `node` with the default options.
    pub async fn call_at<M: Message>(
        &self,
        node: SocketAddr,
        service: &str,
        request: M,
    ) -> Result<M::Reply, Error> {
        self.request(service, request).at(node).send().await
    }

    /// A call with options: `client.request("greeter", msg).timeout(d).json().at(addr).await`.
    pub fn request<'c, M: Message>(&'c self, service: &'c str, request: M) -> Call<'c, M> {
        Call {
            client: self,
            service,
            request,
            node: None,
            timeout: None,
            content_type: ContentType::default(),
            metadata: Metadata::default(),
        }
    }
}

/// One call being set up; `.await` it (or call [`send`](Call::send)) to make it.
#[must_use = "a call is made only when awaited"]
pub struct Call<'c, M> {
    client: &'c Client,
    service: &'c str,
    request: M,
    node: Option<SocketAddr>,
    timeout: Option<Duration>,
    content_type: ContentType,
    metadata: Metadata,
}

impl<'c, M: Message> Call<'c, M> {
    /// Sends the call to the node at `addr` instead of resolving the service by name (this
    /// node's own address stays in-process).
    pub fn at(mut self, addr: SocketAddr) -> Self {
        self.node = Some(addr);
        self
    }

    /// Overrides the node's default call timeout for this call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Encodes a remote call as JSON instead of bincode.
    pub fn json(self) -> Self {
        self.content_type(ContentType::Json)
    }

    /// Chooses the codec of a remote call.
    pub fn content_type(mut self, content_type: ContentType) -> Self {
        self.content_type = content_type;
        self
    }

    /// Adds a metadata entry (key case-insensitive).
    pub fn metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// Makes the call.
    pub async fn send(self) -> Result<M::Reply, Error> {
        let shared = &self.client.shared;
        let timeout = self.timeout.unwrap_or(shared.call_timeout);
        let target = match self.node {
            Some(addr) if !shared.is_self(addr) => addr,
            Some(_) => return local(shared, None, self, timeout).await,
            None => {
                let found = shared.services.get(self.service);
                if found.is_some() {
                    return local(shared, found, self, timeout).await;
                }
                remote_instance(shared, self.service)?
            }
        };
        remote(shared, target, self, timeout).await
    }
}

/// The address of an instance of `service` on another node, from the registry.
fn remote_instance(shared: &Shared, service: &str) -> Result<SocketAddr, Error> {
    shared
        .membership
        .registry()
        .pick(service)
        .filter(|addr| !shared.is_self(*addr))
        .ok_or_else(|| {
            Error::client(
                Code::NotFound,
                format!("no instance of service {service} in the cluster"),
            )
        })
}

impl<'c, M: Message> IntoFuture for Call<'c, M> {
    type Output = Result<M::Reply, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'c>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A running service found by name on this node.
type Found = (Arc<str>, Arc<dyn LocalService>);

async fn local<M: Message>(
    shared: &Shared,
    found: Option<Found>,
    call: Call<'_, M>,
    timeout: Duration,
) -> Result<M::Reply, Error> {
    let Some((service, running)) = found.or_else(|| shared.services.get(call.service)) else {
        return Err(Error::server(
            Code::NotFound,
            format!(
                "service {} does not run on node {}",
                call.service, shared.name
            ),
        ));
    };
    let deadline = Instant::now() + timeout;
    let ctx = Context {
        service,
        endpoint: Cow::Borrowed(M::ENDPOINT),
        request_id: shared.request_id(),
        deadline,
        metadata: call.metadata,
        peer: None,
        content_type: None,
    };
    let pending = running.dispatch(M::ENDPOINT, Box::new(call.request), ctx)?;
    let reply = await_reply(pending, deadline, M::ENDPOINT, Origin::Client).await?;
    downcast_reply(reply, M::ENDPOINT)
}

fn open_failure(e: OpenError) -> Error {
    let code = if e.is_auth_failure() {
        Code::Unauthorized
    } else {
        Code::Unavailable
    };
    Error::client(code, e.to_string())
}

async fn remote<M: Message>(
    shared: &Shared,
    addr: SocketAddr,
    call: Call<'_, M>,
    timeout: Duration,
) -> Result<M::Reply, Error> {
    let ct = call.content_type;
    let body = ct
        .encode(&call.request)
        .map_err(|e| Error::client(Code::BadRequest, e.detail()))?;
    let target = Target {
        addr,
        service: call.service,
        endpoint: M::ENDPOINT,
    };
    let reply = exchange(shared, target, ct, body, call.metadata, timeout).await?;
    ct.decode::<M::Reply>(&reply).map_err(|e| {
        Error::client(
            Code::Internal,
            format!("undecodable reply from {addr}: {}", e.detail()),
        )
    })
}

/// Where an encoded call goes.
#[derive(Clone, Copy)]
struct Target<'a> {
    addr: SocketAddr,
    service: &'a str,
    endpoint: &'a str,
}

/// One encoded request out, one encoded reply back, on a fresh stream of the pooled connection,
/// all within `timeout` (past it: `Timeout` from the client; the request may have run).
async fn exchange(
    shared: &Shared,
    target: Target<'_>,
    ct: ContentType,
    body: Vec<u8>,
    metadata: Metadata,
    timeout: Duration,
) -> Result<bytes::Bytes, Error> {
    let addr = target.addr;
    let within = exchange_unbounded(shared, target, ct, body, metadata, timeout);
    tokio::time::timeout(timeout, within)
        .await
        .unwrap_or_else(|_| {
            Err(Error::client(
                Code::Timeout,
                format!("no reply from {addr} within {timeout:?}"),
            ))
        })
}

async fn exchange_unbounded(
    shared: &Shared,
    target: Target<'_>,
    ct: ContentType,
    body: Vec<u8>,
    metadata: Metadata,
    timeout: Duration,
) -> Result<bytes::Bytes, Error> {
    let Target { addr, .. } = target;
    let max = shared.endpoint.config().max_frame;
    let header = RequestHeader {
        service: target.service.to_string(),
        endpoint: target.endpoint.to_string(),
        content_type: ct.as_str().to_string(),
        timeout_ms: (timeout.as_millis() as u64).max(1),
        request_id: shared.request_id(),
        metadata,
    };
    let mut out = BytesMut::new();
    let too_large = |e: WriteError| Error::client(Code::TooLarge, format!("request: {e}"));
    frame::encode_frame(
        &mut out,
        &encode_header(ct.into(), &header),
        MAX_HEADER.min(max),
    )
    .map_err(too_large)?;
    frame::encode_frame(&mut out, &body, max).map_err(too_large)?;

    let (mut send, mut recv) = shared.endpoint.open(addr).await.map_err(open_failure)?;
    let written = frame::write_frames(&mut send, out.freeze()).await;
    let _ = send.finish();
    // Even if the server stopped our write half-way, its reply may explain why: read it first.
    let lost = |e: ReadError| match e {
        ReadError::TooLarge { .. } => {
            Error::client(Code::TooLarge, format!("reply from {addr}: {e}"))
        }
        e if e.is_auth_failure() => Error::client(
            Code::Unauthorized,
            format!("{addr} refused our certificate in the TLS handshake: {e}"),
        ),
        e => match &written {
            Err(w) => Error::client(Code::Unavailable, format!("sending to {addr}: {w}")),
            Ok(()) => Error::client(Code::Unavailable, format!("no reply from {addr}: {e}")),
        },
    };
    let head = frame::read_frame(&mut recv, MAX_HEADER.min(max))
        .await
        .map_err(lost)?;
    let reply: ReplyHeader = decode_header(&head).1.map_err(|e| {
        Error::client(
            Code::Internal,
            format!("malformed reply header from {addr}: {}", e.detail()),
        )
    })?;
    if let Some(error) = reply.error {
        return Err(error);
    }
    frame::read_frame(&mut recv, max).await.map_err(lost)
}

impl Client {
    /// Calls `endpoint` of `service` with a JSON request and returns the JSON reply, without
    /// Rust types: for tools, gateways and the `colony` CLI. Resolves the service like
    /// [`call`](Client::call) and uses the node's default timeout.
    pub async fn call_json(
        &self,
        service: &str,
        endpoint: &str,
        request: &serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        let shared = &self.shared;
        let timeout = shared.call_timeout;
        let body = serde_json::to_vec(request)
            .map_err(|e| Error::client(Code::BadRequest, format!("request: {e}")))?;
        let reply = if let Some((name, running)) = shared.services.get(service) {
            bytes::Bytes::from(json_local(shared, name, running, endpoint, &body, timeout).await?)
        } else {
            let target = Target {
                addr: remote_instance(shared, service)?,
                service,
                endpoint,
            };
            let metadata = Metadata::default();
            exchange(shared, target, ContentType::Json, body, metadata, timeout).await?
        };
        serde_json::from_slice(&reply)
            .map_err(|e| Error::client(Code::Internal, format!("reply is not JSON: {e}")))
    }
}

/// A JSON call to a service on this node: decoded and encoded with the endpoint's own codec, so
/// it behaves exactly like a remote JSON call.
async fn json_local(
    shared: &Shared,
    service: Arc<str>,
    running: Arc<dyn LocalService>,
    endpoint: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Error> {
    let ctx = Context {
        service,
        endpoint: Cow::Owned(endpoint.to_string()),
        request_id: shared.request_id(),
        deadline: Instant::now() + timeout,
        metadata: Metadata::default(),
        peer: None,
        content_type: Some(ContentType::Json),
    };
    // The caller waits here, as for a typed in-process call.
    call_encoded(
        running.as_ref(),
        ctx,
        ContentType::Json,
        body,
        Origin::Client,
    )
    .await
}
