//! SAML's single logout behind the core's participant seam.
//!
//! A first step: they still call the web modules' delivery functions. The
//! state is reached through a weak reference set once it is built, since
//! the engine (inside the state) holds the participants.

use crate::app::{AppState, SharedState};
use async_trait::async_trait;
use castellan_core::{
    Attempt, EndedSession, FrontChannelVisit, LogoutMessage, LogoutNotification, LogoutParticipant,
};
use std::sync::{Arc, OnceLock, Weak};

type Party = fn(&AppState, &str) -> Option<String>;
type Notify = fn(&SharedState, Vec<LogoutNotification>);
type Visits = fn(&SharedState, &[LogoutNotification]) -> Vec<FrontChannelVisit>;

pub struct WebParticipant {
    name: &'static str,
    state: Arc<OnceLock<Weak<AppState>>>,
    party: Party,
    notify: Notify,
    visits: Option<Visits>,
}

impl WebParticipant {
    pub fn saml(state: Arc<OnceLock<Weak<AppState>>>) -> Self {
        Self {
            name: crate::saml::PARTICIPANT,
            state,
            party: |s, service| s.saml.party(service),
            notify: crate::saml::notify_logout,
            visits: Some(crate::saml::front_channel_visits),
        }
    }

    fn state(&self) -> Option<SharedState> {
        self.state.get().and_then(Weak::upgrade)
    }
}

#[async_trait]
impl LogoutParticipant for WebParticipant {
    fn name(&self) -> &'static str {
        self.name
    }

    fn party(&self, service: &str) -> Option<String> {
        (self.party)(self.state()?.as_ref(), service)
    }

    async fn messages(
        &self,
        _ended: &EndedSession,
        notifications: &[LogoutNotification],
    ) -> Vec<LogoutMessage> {
        if let Some(state) = self.state() {
            (self.notify)(&state, notifications.to_vec());
        }
        Vec::new()
    }

    async fn visits(
        &self,
        _ended: &EndedSession,
        notifications: &[LogoutNotification],
    ) -> Vec<FrontChannelVisit> {
        match (self.visits, self.state()) {
            (Some(visits), Some(state)) => visits(&state, notifications),
            _ => Vec::new(),
        }
    }

    async fn send(&self, _message: &LogoutMessage) -> Attempt {
        Attempt::Delivered
    }
}
