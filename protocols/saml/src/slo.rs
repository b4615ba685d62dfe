//! Single logout at the IdP (SAML Profiles §4.4): an SP's LogoutRequest
//! ends the browser's session when it names what that SP was issued in
//! it; the SPs that can only be told through the browser are visited in a
//! chain (one LogoutRequest, one LogoutResponse each), and the chain ends
//! by answering the requester, or, for a logout started elsewhere, at a
//! final destination.
//!
//! The chain is a state machine: each step says what the browser does
//! next ([`LogoutStep`]); the web layer only renders it.

use crate::idp::{signing_step, IdentityProvider};
use crate::records::{self, Chain, ChainStep, Issued, Requester};
use crate::request::{self, CheckedLogoutRequest};
use crate::response::{self, LogoutRequestParams};
use crate::sso::{PostForm, SamlMessage};
use crate::{binding, nameid, status, SamlError, BINDING_POST, BINDING_REDIRECT, BINDING_SOAP};
use castellan_core::ids::{new_ticket_id, session_tag};
use castellan_core::{Engine, FrontChannelVisit, Initiator, TicketGrantingTicket, TicketStore};
use std::time::Duration;

/// The name SAML goes by in single logout.
pub const PARTICIPANT: &str = "saml";

/// How long a front-channel chain waits for the browser's next visit.
pub const CHAIN_TTL: Duration = Duration::from_secs(600);

/// What the browser does next in a logout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutStep {
    /// To an SP's SLO endpoint, the message in the query (HTTP-Redirect).
    Redirect(String),
    /// Posted to an SP's SLO endpoint (HTTP-POST).
    Post(PostForm),
    /// The logout is over: to `destination`, or the signed-out page.
    Done { destination: Option<String> },
}

/// What an SP's LogoutRequest did.
#[derive(Debug)]
pub struct LogoutAnswer {
    pub next: LogoutStep,
    /// Whether the engine was asked to end the session (and could).
    pub ended: bool,
}

/// Whether a LogoutRequest names what was issued to its SP in this
/// session: the NameID (value, and format when given) and, when it names
/// session indexes, the one issued.
pub fn names_issued(checked: &CheckedLogoutRequest<'_>, issued: &[Issued]) -> bool {
    issued.iter().any(|i| {
        i.sp == checked.sp.name
            && i.name_id.value == checked.name_id
            && match checked.name_id_format.as_deref() {
                Some(f) => f == i.name_id.format,
                None => true,
            }
            && (checked.session_indexes.is_empty()
                || checked.session_indexes.contains(&i.session_index))
    })
}

impl IdentityProvider {
    /// An SP's LogoutRequest: ends this browser's session when it names
    /// it, tells the other SPs, and answers the requester last.
    pub async fn logout_request(
        &self,
        engine: &Engine,
        session_id: Option<&str>,
        message: SamlMessage,
    ) -> Result<LogoutAnswer, SamlError> {
        let SamlMessage {
            xml,
            binding,
            relay_state,
        } = message;
        let limits = self.limits(engine.clock().now());
        let checked = request::check_logout_request(&xml, binding, &self.settings.sps, &limits)
            .inspect_err(|e| tracing::warn!(error = %e, "SAML LogoutRequest refused"))?;
        let sp = checked.sp;
        let mut code = status::SUCCESS;
        // The request must name this browser's session and what its SP was
        // issued in it: a signed request about another session ends nothing.
        if let Some(id) = session_id {
            if let Some(session) = engine.session(id).await? {
                if !self
                    .names_session(engine.store().as_ref(), &session, &checked)
                    .await?
                {
                    tracing::warn!(sp = %sp.name, "LogoutRequest names another session or user: nothing ended");
                    code = status::REQUESTER;
                }
            }
        }
        let mut steps = Vec::new();
        let mut ended = false;
        if let Some(id) = session_id.filter(|_| code == status::SUCCESS) {
            // The requester learns it from the LogoutResponse; SPs with only
            // browser SLO endpoints are visited in a chain first.
            let initiator = Initiator {
                participant: PARTICIPANT,
                party: sp.name.clone(),
            };
            match engine.logout(id, Some(&initiator)).await {
                Ok(out) => {
                    ended = true;
                    steps = chain_steps(&out.visits);
                }
                Err(e) => {
                    tracing::error!(error = %e, "logout failed on the ticket store");
                    code = status::RESPONDER;
                }
            }
        }
        let chain = Chain {
            requester: Some(Requester {
                sp: sp.name.clone(),
                request_id: checked.id.clone(),
                relay_state,
                code: code.to_owned(),
            }),
            next: steps,
            awaiting: None,
            destination: None,
        };
        let next = self
            .advance(
                engine.store().as_ref(),
                engine.clock().now(),
                &new_ticket_id("SL"),
                chain,
            )
            .await?;
        Ok(LogoutAnswer { next, ended })
    }

    /// What this SP was issued in `session`, or, for a session of the
    /// release before (nothing kept), today's derivation of it.
    async fn names_session(
        &self,
        store: &dyn TicketStore,
        session: &TicketGrantingTicket,
        checked: &CheckedLogoutRequest<'_>,
    ) -> Result<bool, SamlError> {
        let sp = checked.sp;
        let mut issued = Vec::new();
        for r in &session.services {
            if self.party(&r.service).as_deref() != Some(sp.name.as_str()) {
                continue;
            }
            if let Some(bytes) = store.record(&records::issued_key(&r.ticket_id)).await? {
                match records::decode::<Issued>(&bytes) {
                    Ok(i) => issued.push(i),
                    Err(e) => tracing::warn!(error = %e, "an unreadable SAML issued record"),
                }
            }
        }
        if !issued.is_empty() {
            return Ok(names_issued(checked, &issued));
        }
        let tag = session_tag(&session.id).unwrap_or_default();
        let format = sp.name_id_format.as_str();
        let name_checked = format != nameid::TRANSIENT
            && checked.name_id_format.as_deref() != Some(nameid::TRANSIENT);
        let name_ok = !name_checked
            || self
                .derived_name_id(sp, &session.principal.id)
                .is_some_and(|expected| expected.value == checked.name_id);
        let index_ok = if checked.session_indexes.is_empty() {
            name_checked
        } else {
            checked.session_indexes.iter().any(|i| i == tag)
        };
        Ok(index_ok && name_ok)
    }

    /// A logout started elsewhere (CAS `/logout`, OIDC) in a browser: the
    /// SAML SPs to visit, then `destination` (the signed-out page when none).
    pub async fn front_channel_logout(
        &self,
        store: &dyn TicketStore,
        now_ms: u64,
        visits: &[FrontChannelVisit],
        destination: Option<String>,
    ) -> Result<LogoutStep, SamlError> {
        let chain = Chain {
            requester: None,
            next: chain_steps(visits),
            awaiting: None,
            destination,
        };
        self.advance(store, now_ms, &new_ticket_id("SL"), chain)
            .await
    }

    /// An SP's LogoutResponse in a chain we started (RelayState = its id):
    /// on to the next SP.
    pub async fn chain_response(
        &self,
        store: &dyn TicketStore,
        now_ms: u64,
        relay_state: Option<&str>,
    ) -> Result<LogoutStep, SamlError> {
        let done = LogoutStep::Done { destination: None };
        let Some(chain_id) = relay_state.filter(|r| r.starts_with("SL-") && r.len() <= 64) else {
            return Ok(done);
        };
        match store.take_record(&records::chain_key(chain_id)).await? {
            Some(bytes) => match records::decode::<Chain>(&bytes) {
                Ok(chain) => self.advance(store, now_ms, chain_id, chain).await,
                Err(_) => Ok(done),
            },
            None => Ok(done),
        }
    }

    /// Sends the browser to the next SP of the chain with a LogoutRequest
    /// (RelayState = the chain's id), or, when none is left, ends it.
    async fn advance(
        &self,
        store: &dyn TicketStore,
        now_ms: u64,
        chain_id: &str,
        mut chain: Chain,
    ) -> Result<LogoutStep, SamlError> {
        while !chain.next.is_empty() {
            let step = chain.next.remove(0);
            let Some(sp) = self.sp_by_name(&step.sp) else {
                continue;
            };
            let Some(name_id) = step
                .name_id
                .clone()
                .or_else(|| self.derived_name_id(sp, &step.principal_id))
            else {
                tracing::info!(sp = %sp.name, "front-channel logout skipped: NameID format not derivable");
                continue;
            };
            let (redirect_binding, location) =
                match (sp.slo(BINDING_REDIRECT), sp.slo(BINDING_POST)) {
                    (Some(ep), _) => (true, ep.location.clone()),
                    (None, Some(ep)) => (false, ep.location.clone()),
                    (None, None) => continue,
                };
            let signing = self.signing();
            let built = signing_step(|| {
                let params = LogoutRequestParams {
                    idp_entity_id: &signing.entity_id,
                    destination: &location,
                    name_id: &name_id,
                    session_index: &step.session_index,
                    now_ms,
                };
                let (id, xml) =
                    response::logout_request(&params, !redirect_binding, &signing.credentials)?;
                if redirect_binding {
                    let query = binding::encode_redirect(
                        "SAMLRequest",
                        &xml,
                        Some(chain_id),
                        &signing.credentials,
                    )?;
                    Ok((id, query))
                } else {
                    Ok((id, xml))
                }
            });
            let (id, payload) = match built {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, sp = %sp.name, "building a LogoutRequest failed");
                    continue;
                }
            };
            chain.awaiting = Some(id);
            store
                .put_record(
                    &records::chain_key(chain_id),
                    &records::encode(&chain)?,
                    CHAIN_TTL,
                )
                .await?;
            tracing::info!(sp = %sp.name, "front-channel logout: visiting the service provider");
            return Ok(if redirect_binding {
                let sep = if location.contains('?') { '&' } else { '?' };
                LogoutStep::Redirect(format!("{location}{sep}{payload}"))
            } else {
                LogoutStep::Post(PostForm::message(
                    &location,
                    "SAMLRequest",
                    &payload,
                    Some(chain_id),
                ))
            });
        }
        match &chain.requester {
            Some(r) => Ok(self.answer_requester(r, now_ms).await),
            None => Ok(LogoutStep::Done {
                destination: chain.destination,
            }),
        }
    }

    /// The signed LogoutResponse to the SP that asked for the logout, at
    /// its SLO endpoint: Redirect binding when it has one, else POST.
    async fn answer_requester(&self, requester: &Requester, now_ms: u64) -> LogoutStep {
        let done = LogoutStep::Done { destination: None };
        let Some(sp) = self.sp_by_name(&requester.sp) else {
            return done;
        };
        let code: &'static str = if requester.code == status::SUCCESS {
            status::SUCCESS
        } else if requester.code == status::REQUESTER {
            status::REQUESTER
        } else {
            status::RESPONDER
        };
        let (redirect_binding, ep) = match (sp.slo(BINDING_REDIRECT), sp.slo(BINDING_POST)) {
            (Some(ep), _) => (true, ep),
            (None, Some(ep)) => (false, ep),
            (None, None) => return done,
        };
        let destination = ep
            .response_location
            .clone()
            .unwrap_or_else(|| ep.location.clone());
        let signing = self.signing();
        // The Redirect binding signs the query, the POST binding the document.
        let built = signing_step(|| {
            let xml = response::logout_response(
                &signing.entity_id,
                &destination,
                &requester.request_id,
                code,
                now_ms,
                !redirect_binding,
                &signing.credentials,
            )?;
            if redirect_binding {
                binding::encode_redirect(
                    "SAMLResponse",
                    &xml,
                    requester.relay_state.as_deref(),
                    &signing.credentials,
                )
            } else {
                Ok(xml)
            }
        });
        match built {
            Ok(query) if redirect_binding => {
                let sep = if destination.contains('?') { '&' } else { '?' };
                LogoutStep::Redirect(format!("{destination}{sep}{query}"))
            }
            Ok(xml) => LogoutStep::Post(PostForm::message(
                &destination,
                "SAMLResponse",
                &xml,
                requester.relay_state.as_deref(),
            )),
            Err(e) => {
                tracing::error!(error = %e, "building a LogoutResponse failed");
                done
            }
        }
    }

    /// Whether an SP is told through the browser only.
    pub(crate) fn front_channel_only(&self, sp: &crate::ServiceProvider) -> bool {
        sp.slo(BINDING_SOAP).is_none()
            && (sp.slo(BINDING_REDIRECT).is_some() || sp.slo(BINDING_POST).is_some())
    }
}

/// The SAML steps among a logout's browser visits.
pub fn chain_steps(visits: &[FrontChannelVisit]) -> Vec<ChainStep> {
    visits
        .iter()
        .filter(|v| v.participant == PARTICIPANT)
        .filter_map(|v| serde_json::from_str::<ChainStep>(&v.data).ok())
        .collect()
}
