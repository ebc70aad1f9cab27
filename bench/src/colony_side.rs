//! colony's side: the echo service, its server, and the callers that drive it.
//!
//! The request is `{ id: u64, body: String }` and the reply echoes it, the same shape as the
//! protobuf messages of the tonic side. Each instance of the service is an actor that answers
//! one message at a time; the server runs several instances (see `--instances`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use colony::prelude::*;
use colony::ClusterCa;
use serde::{Deserialize, Serialize};

use crate::certs::BoxError;
use crate::load::Caller;

/// The service name callers address.
pub(crate) const SERVICE: &str = "echo";

/// An echo request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Echo {
    /// Caller-chosen id, returned as is.
    pub(crate) id: u64,
    /// The payload.
    pub(crate) body: String,
}

/// The echo reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EchoReply {
    /// The request's id.
    pub(crate) id: u64,
    /// The request's payload.
    pub(crate) body: String,
}

impl Message for Echo {
    type Reply = EchoReply;
    const ENDPOINT: &'static str = "Echo.Call";
}

/// The service: no state, hands the payload back.
pub(crate) struct EchoService;

impl Handler<Echo> for EchoService {
    async fn handle(&mut self, req: Echo, _ctx: &Context) -> Result<EchoReply, Error> {
        Ok(EchoReply {
            id: req.id,
            body: req.body,
        })
    }
}

/// Starts a node on a free loopback port serving [`SERVICE`] with `instances` instances.
pub(crate) async fn start_server(
    name: &str,
    trust: Trust<'_>,
    instances: usize,
) -> Result<Node, BoxError> {
    let builder = Node::builder().name(name).listen("127.0.0.1:0");
    let node = match trust {
        Trust::Ca(ca) => builder.ca(ca.clone()),
        Trust::Dir(dir) => builder.ca_dir(dir),
    }
    .start()
    .await?;
    node.service(SERVICE)
        .instances(instances.max(1))
        .handler::<Echo>()
        .spawn(|| EchoService)
        .await?;
    Ok(node)
}

/// Where a node gets its cluster CA.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trust<'a> {
    /// A CA held in memory.
    Ca(&'a Arc<ClusterCa>),
    /// The `ca.pem` in a directory, written by the parent process.
    Dir(&'a Path),
}

/// Starts a node that only calls (it still binds a port, as every node does).
pub(crate) async fn start_client(name: &str, ca: &Arc<ClusterCa>) -> Result<Node, BoxError> {
    Ok(Node::builder()
        .name(name)
        .listen("127.0.0.1:0")
        .ca(ca.clone())
        .start()
        .await?)
}

/// One load task's calls: to the node at `addr`, or in-process when `addr` is `None`.
pub(crate) struct ColonyCaller {
    client: Client,
    addr: Option<SocketAddr>,
    body: String,
    next_id: u64,
}

impl ColonyCaller {
    /// Calls [`SERVICE`] with a `body` payload, remotely at `addr` or on the client's own node.
    pub(crate) fn new(client: Client, addr: Option<SocketAddr>, body: String) -> Self {
        Self {
            client,
            addr,
            body,
            next_id: 0,
        }
    }
}

impl Caller for ColonyCaller {
    async fn call(&mut self) -> Result<(), String> {
        self.next_id += 1;
        let id = self.next_id;
        let req = Echo {
            id,
            body: self.body.clone(),
        };
        let call = self.client.request(SERVICE, req);
        let call = match self.addr {
            Some(addr) => call.at(addr),
            None => call,
        };
        let reply = call.send().await.map_err(|e| e.to_string())?;
        check(id, self.body.len(), reply.id, reply.body.len())
    }
}

/// Checks that a reply echoes its request (shared by every side).
pub(crate) fn check(id: u64, len: usize, got_id: u64, got_len: usize) -> Result<(), String> {
    if got_id == id && got_len == len {
        Ok(())
    } else {
        Err(format!(
            "wrong echo: id {got_id} len {got_len}, expected id {id} len {len}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_only_the_echo() {
        assert!(check(7, 100, 7, 100).is_ok());
        assert!(check(7, 100, 8, 100).is_err());
        assert!(check(7, 100, 7, 99).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remote_and_local_calls_echo() {
        let ca = Arc::new(ClusterCa::generate().unwrap());
        let server = start_server("s", Trust::Ca(&ca), 2).await.unwrap();
        let client = start_client("c", &ca).await.unwrap();
        let mut remote = ColonyCaller::new(client.client(), Some(server.addr()), "x".repeat(100));
        remote.call().await.unwrap();
        remote.call().await.unwrap();
        let mut local = ColonyCaller::new(server.client(), None, "y".repeat(10));
        local.call().await.unwrap();
        client.shutdown().await;
        server.shutdown().await;
    }
}
