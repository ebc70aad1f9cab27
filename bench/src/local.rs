//! The in-process floor: a bare ractor actor answering `ractor::call!`, doing what colony's echo
//! handler does (move the payload into the reply), with none of colony's dispatch around it
//! (service lookup, endpoint table, context, deadline, supervision).

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::certs::BoxError;
use crate::colony_side::{check, Echo, EchoReply};
use crate::load::Caller;

/// The actor's one message: an echo request and where to answer.
pub(crate) enum EchoMsg {
    /// Answer `Echo` with its payload.
    Call(Echo, RpcReplyPort<EchoReply>),
}

/// A stateless echo actor.
pub(crate) struct EchoActor;

impl Actor for EchoActor {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<EchoMsg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<EchoMsg>,
        msg: EchoMsg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let EchoMsg::Call(req, reply) = msg;
        let _ = reply.send(EchoReply {
            id: req.id,
            body: req.body,
        });
        Ok(())
    }
}

/// Spawns an unnamed [`EchoActor`]; stop it with `actor.stop(None)`.
pub(crate) async fn spawn_actor() -> Result<ActorRef<EchoMsg>, BoxError> {
    let (actor, _handle) = Actor::spawn(None, EchoActor, ()).await?;
    Ok(actor)
}

/// One load task's `call!`s.
pub(crate) struct RactorCaller {
    actor: ActorRef<EchoMsg>,
    body: String,
    next_id: u64,
}

impl RactorCaller {
    /// Calls `actor` with a `body` payload.
    pub(crate) fn new(actor: ActorRef<EchoMsg>, body: String) -> Self {
        Self {
            actor,
            body,
            next_id: 0,
        }
    }
}

impl Caller for RactorCaller {
    async fn call(&mut self) -> Result<(), String> {
        self.next_id += 1;
        let id = self.next_id;
        let req = Echo {
            id,
            body: self.body.clone(),
        };
        let reply = ractor::call!(self.actor, EchoMsg::Call, req).map_err(|e| e.to_string())?;
        check(id, self.body.len(), reply.id, reply.body.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_actor_echoes() {
        let actor = spawn_actor().await.unwrap();
        let mut caller = RactorCaller::new(actor.clone(), "q".repeat(100));
        caller.call().await.unwrap();
        caller.call().await.unwrap();
        actor.stop(None);
    }
}
