//! The actor that hosts one service instance.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::behavior::{Behavior, Done};
use crate::instances::Depth;

/// Makes a fresh [`Behavior`] for every start and restart of an instance.
pub type Factory<B> = Arc<dyn Fn() -> B + Send + Sync>;

pub(crate) struct InstanceActor<B: Behavior> {
    pub(crate) factory: Factory<B>,
    /// Counted up by [`Instances::send`](crate::Instances::send), down by [`Done`].
    pub(crate) depth: Depth,
}

impl<B: Behavior> Actor for InstanceActor<B> {
    type Msg = B::Msg;
    type State = B;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<B, ActorProcessingErr> {
        let mut state = (self.factory)();
        state.started().await?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut B,
    ) -> Result<(), ActorProcessingErr> {
        state.stopping().await;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut B,
    ) -> Result<(), ActorProcessingErr> {
        state.handle(msg, Done(&self.depth)).await;
        Ok(())
    }
}
