//! SAML's part of single logout, behind the core's participant seam: SPs
//! with a SOAP SingleLogoutService are told server to server; those with
//! only browser endpoints come back as visits for the front-channel chain.
//! Each is named the NameID and SessionIndex it was issued at sign-in.

use crate::idp::{signing_step, IdentityProvider, NameId};
use crate::records::{self, ChainStep, Issued};
use crate::response::{self, LogoutRequestParams};
use crate::slo::PARTICIPANT;
use crate::{ServiceProvider, BINDING_SOAP};
use async_trait::async_trait;
use castellan_core::ids::session_tag;
use castellan_core::{
    Attempt, Clock, EndedSession, FrontChannelVisit, LogoutMessage, LogoutMode, LogoutNotification,
    LogoutParticipant, TicketStore,
};
use std::sync::Arc;

pub struct SamlLogout {
    idp: Arc<IdentityProvider>,
    store: Arc<dyn TicketStore>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
}

impl SamlLogout {
    pub fn new(
        idp: Arc<IdentityProvider>,
        store: Arc<dyn TicketStore>,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            idp,
            store,
            clock,
            http,
        }
    }

    /// What the SP of a notification was issued: the kept record, or, for
    /// a sign-in of the release before, the NameID derived again where it
    /// can be.
    async fn issued(&self, sp: &ServiceProvider, n: &LogoutNotification) -> Option<Issued> {
        match self.store.record(&records::issued_key(&n.ticket_id)).await {
            Ok(Some(bytes)) => match records::decode::<Issued>(&bytes) {
                Ok(i) if i.sp == sp.name => return Some(i),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "an unreadable SAML issued record"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "SAML issued record not read"),
        }
        let name_id = self.idp.derived_name_id(sp, &n.principal_id)?;
        Some(Issued {
            sp: sp.name.clone(),
            name_id,
            session_index: session_tag(&n.ticket_id).unwrap_or_default().to_owned(),
        })
    }
}

/// The same SP, subject and session are told once.
fn first_time(told: &mut Vec<(String, NameId, String)>, i: &Issued) -> bool {
    let key = (i.sp.clone(), i.name_id.clone(), i.session_index.clone());
    if told.contains(&key) {
        false
    } else {
        told.push(key);
        true
    }
}

#[async_trait]
impl LogoutParticipant for SamlLogout {
    fn name(&self) -> &'static str {
        PARTICIPANT
    }

    fn party(&self, service: &str) -> Option<String> {
        self.idp.party(service)
    }

    /// Signed SOAP LogoutRequests (SAML Bindings §3.2) to the SPs with a
    /// SOAP SingleLogoutService.
    async fn messages(
        &self,
        _ended: &EndedSession,
        notifications: &[LogoutNotification],
    ) -> Vec<LogoutMessage> {
        let mut told = Vec::new();
        let mut out = Vec::new();
        for n in notifications {
            if n.mode != LogoutMode::BackChannel {
                continue;
            }
            let Some(sp) = self.idp.sp_of_callback(&n.service) else {
                continue;
            };
            let Some(ep) = sp.slo(BINDING_SOAP) else {
                continue;
            };
            let Some(issued) = self.issued(sp, n).await else {
                tracing::info!(sp = %sp.name, "SAML back-channel logout skipped: NameID format not derivable");
                continue;
            };
            if !first_time(&mut told, &issued) {
                continue;
            }
            let signing = self.idp.signing();
            let (location, now) = (ep.location.clone(), self.clock.now());
            let xml = signing_step(|| {
                let params = LogoutRequestParams {
                    idp_entity_id: &signing.entity_id,
                    destination: &location,
                    name_id: &issued.name_id,
                    session_index: &issued.session_index,
                    now_ms: now,
                };
                response::logout_request(&params, true, &signing.credentials).map(|(_, xml)| xml)
            });
            match xml {
                Ok(xml) => out.push(LogoutMessage {
                    party: sp.name.clone(),
                    endpoint: location,
                    payload: soap_envelope(&xml),
                }),
                Err(e) => {
                    tracing::error!(sp = %sp.name, error = %e, "building a LogoutRequest failed")
                }
            }
        }
        out
    }

    /// The SPs with only browser SLO endpoints, for the front-channel chain.
    async fn visits(
        &self,
        _ended: &EndedSession,
        notifications: &[LogoutNotification],
    ) -> Vec<FrontChannelVisit> {
        let mut told = Vec::new();
        let mut out = Vec::new();
        for n in notifications {
            let Some(sp) = self.idp.sp_of_callback(&n.service) else {
                continue;
            };
            if !self.idp.front_channel_only(sp) {
                continue;
            }
            let issued = self.issued(sp, n).await;
            let step = match &issued {
                Some(i) if !first_time(&mut told, i) => continue,
                Some(i) => ChainStep {
                    sp: sp.name.clone(),
                    session_index: i.session_index.clone(),
                    principal_id: n.principal_id.clone(),
                    name_id: Some(i.name_id.clone()),
                },
                // Not derivable: the chain skips it, as it says in its log.
                None => ChainStep {
                    sp: sp.name.clone(),
                    session_index: session_tag(&n.ticket_id).unwrap_or_default().to_owned(),
                    principal_id: n.principal_id.clone(),
                    name_id: None,
                },
            };
            match serde_json::to_string(&step) {
                Ok(data) => out.push(FrontChannelVisit {
                    participant: PARTICIPANT.into(),
                    party: sp.name.clone(),
                    data,
                }),
                Err(e) => tracing::error!(error = %e, "a front-channel logout step not encoded"),
            }
        }
        out
    }

    async fn send(&self, message: &LogoutMessage) -> Attempt {
        let sent = self
            .http
            .post(&message.endpoint)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header(
                "SOAPAction",
                "http://www.oasis-open.org/committees/security",
            )
            .body(message.payload.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            // A 4xx will not get better by asking again.
            Ok(r) if r.status().is_client_error() => Attempt::Refused,
            Ok(r) => {
                tracing::debug!(status = %r.status(), "SAML SOAP logout not accepted");
                Attempt::Failed
            }
            Err(e) => {
                tracing::debug!(error = %e, "SAML SOAP logout not delivered");
                Attempt::Failed
            }
        }
    }
}

pub fn soap_envelope(xml: &str) -> String {
    format!(
        "<soap11:Envelope xmlns:soap11=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap11:Body>{xml}</soap11:Body></soap11:Envelope>"
    )
}
