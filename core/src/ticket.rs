//! The tickets of the CAS protocol and the login flow token.
//!
//! Every value here is plain data, serializable, so that a shared store
//! (Redis) can hold it and any node can read what another node wrote.

use crate::clock::Millis;
use crate::methods::AuthnMethods;
use crate::principal::Principal;
use crate::service::LogoutMode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The prefixes CAS clients know tickets by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketKind {
    TicketGranting,
    Service,
    Proxy,
    ProxyGranting,
    ProxyGrantingIou,
    LoginFlow,
}

impl TicketKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::TicketGranting => "TGT",
            Self::Service => "ST",
            Self::Proxy => "PT",
            Self::ProxyGranting => "PGT",
            Self::ProxyGrantingIou => "PGTIOU",
            Self::LoginFlow => "LF",
        }
    }
}

/// One service the SSO session issued a ticket for: whom single logout notifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub ticket_id: String,
    pub service: String,
    pub logout: LogoutMode,
}

/// The SSO session (CAS 3.0 §3.6), kept in the `CASTGC` cookie by its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketGrantingTicket {
    pub id: String,
    pub principal: Arc<Principal>,
    pub authenticated_at: Millis,
    /// Hard limit: the session ends here whatever its use.
    pub expires_at: Millis,
    /// "Remember me": a long-term session.
    pub long_term: bool,
    /// Services that got tickets from this session, in issue order.
    #[serde(default)]
    pub services: Vec<ServiceRecord>,
    /// How the user proved who they are in this session (first factor and
    /// any second). Last: a node of the release before reads the fields
    /// above and ignores this one.
    #[serde(default)]
    pub methods: AuthnMethods,
}

/// A one-time ticket for one service URL (CAS 3.0 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTicket {
    pub id: String,
    pub session_id: String,
    pub service: String,
    /// Issued right after credentials were presented (not from SSO).
    pub from_new_login: bool,
}

/// A one-time ticket a proxying service obtained for a target service (§3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyTicket {
    pub id: String,
    pub session_id: String,
    pub service: String,
    /// Proxy callback URLs traversed, most recent first (§2.6.2).
    pub proxies: Vec<String>,
}

/// Lets a service obtain proxy tickets (§3.3); lives as long as its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyGrantingTicket {
    pub id: String,
    pub session_id: String,
    /// Proxy callback URLs traversed, most recent (this PGT's pgtUrl) first.
    pub proxies: Vec<String>,
}

/// The login form's `execution` value: one-time, bound to the flow it was
/// rendered for (against CSRF and replay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFlow {
    pub id: String,
    /// The `service` the form was rendered for, if any.
    pub service: Option<String>,
}

/// Everything the store keeps under a ticket id besides SSO sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ticket {
    Service(ServiceTicket),
    Proxy(ProxyTicket),
    ProxyGranting(ProxyGrantingTicket),
    LoginFlow(LoginFlow),
}

impl Ticket {
    /// The session a ticket belongs to; a login form token has none.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Self::Service(t) => Some(&t.session_id),
            Self::Proxy(t) => Some(&t.session_id),
            Self::ProxyGranting(t) => Some(&t.session_id),
            Self::LoginFlow(_) => None,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Self::Service(t) => &t.id,
            Self::Proxy(t) => &t.id,
            Self::ProxyGranting(t) => &t.id,
            Self::LoginFlow(t) => &t.id,
        }
    }

    pub(crate) fn id_mut(&mut self) -> &mut String {
        match self {
            Self::Service(t) => &mut t.id,
            Self::Proxy(t) => &mut t.id,
            Self::ProxyGranting(t) => &mut t.id,
            Self::LoginFlow(t) => &mut t.id,
        }
    }
}
