//! The authorization code flow's trip through the CAS login: the checked
//! request waits in the store while the browser logs in at `/login` with
//! the provider's callback as its service; at the callback the service
//! ticket is validated through the engine (the semantics of
//! `/p3/serviceValidate`) and the client gets a code.

use crate::authorize::{self, Rejection};
use crate::claims::{grant_claims_key, request_claims_key, ClaimsRequest};
use crate::error::{ErrorCode, OAuthError};
use crate::provider::Provider;
use crate::records::{
    acr_request_key, authn_key, code_key, consent_prompt_key, request_key, AuthnContext, Code,
    CodeRecord, Grant, PendingRequest, ResponseMode,
};
use castellan_core::client::MAX_REQUEST_ID;
use castellan_core::ids::new_ticket_id;
use castellan_core::{ConsentRefusal, Engine, EngineError, InProcessClient};
use std::collections::HashMap;
use std::net::IpAddr;

/// An answer to the client at its redirect_uri (RFC 6749 §4.1.2 and
/// §4.1.2.1), by query or by form post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAnswer {
    pub redirect_uri: String,
    pub response_mode: ResponseMode,
    pub params: Vec<(&'static str, String)>,
}

/// The login a checked authorization request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    /// The callback service URL the login returns to.
    pub service: String,
    /// A fresh login (`prompt=login`, `max_age`).
    pub renew: bool,
    /// A passive one (`prompt=none`): CAS gateway.
    pub gateway: bool,
    pub login_hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Shown to the user: the client or its redirect_uri cannot be
    /// trusted, so nothing goes back to it.
    #[error("{0}")]
    Invalid(String),
    /// The pending request is gone: expired, used, or of another client.
    #[error("the sign-in request expired or was already used")]
    Expired,
    /// The ticket at the callback did not validate.
    #[error("the sign-in could not be confirmed: {0}")]
    NotConfirmed(EngineError),
    /// Refused to the client at its redirect_uri.
    #[error("refused to the client: {error}")]
    Client {
        answer: Box<ClientAnswer>,
        error: OAuthError,
    },
    /// The ticket store failed, or too many sign-ins are pending.
    #[error(transparent)]
    Unavailable(#[from] EngineError),
}

impl Provider {
    /// An error for the client, with its `state` and our `iss` (RFC 9207).
    fn refuse(
        &self,
        redirect_uri: &str,
        response_mode: &ResponseMode,
        state: Option<&str>,
        error: OAuthError,
    ) -> SignInError {
        let mut params = vec![
            ("error", error.error.as_str().to_owned()),
            ("error_description", error.error_description.clone()),
        ];
        if let Some(s) = state {
            params.push(("state", s.to_owned()));
        }
        params.push(("iss", self.issuer.clone()));
        SignInError::Client {
            answer: Box::new(ClientAnswer {
                redirect_uri: redirect_uri.to_owned(),
                response_mode: response_mode.clone(),
                params,
            }),
            error,
        }
    }

    /// `/oidc/authorize`: checks the request and keeps it for the login.
    /// `session` is the browser's SSO session id, `client` its address.
    pub async fn authorize(
        &self,
        engine: &Engine,
        params: &HashMap<String, String>,
        session: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<LoginRequest, SignInError> {
        // RFC 9126 §4: a pushed request stands for the whole request.
        let pushed = self.pushed_request(engine, params).await?;
        let params = pushed.as_ref().unwrap_or(params);
        let checked = match authorize::check(&self.clients, params) {
            Ok(c) if c.client.require_par && pushed.is_none() => {
                let r = &c.request;
                return Err(self.refuse(
                    &r.redirect_uri,
                    &r.response_mode,
                    r.state.as_deref(),
                    crate::par::required_error(),
                ));
            }
            Ok(c) => c,
            Err(Rejection::Page(message)) => {
                tracing::warn!(%message, "authorization request refused");
                return Err(SignInError::Invalid(message));
            }
            Err(Rejection::Redirect {
                redirect_uri,
                response_mode,
                state,
                error,
            }) => return Err(self.refuse(&redirect_uri, &response_mode, state.as_deref(), error)),
        };
        let mut request = checked.request;
        let claims_request = match params.get("claims").map(|c| ClaimsRequest::parse(c)) {
            Some(Err(why)) => {
                return Err(self.refuse(
                    &request.redirect_uri,
                    &request.response_mode,
                    request.state.as_deref(),
                    OAuthError::invalid_request(why),
                ))
            }
            Some(Ok(c)) if !c.is_empty() => Some(c),
            _ => None,
        };
        let acr_values = params.get("acr_values").filter(|v| !v.is_empty());
        let asks_mfa = acr_values.is_some_and(|v| crate::acr::asks_mfa(v));
        let requires_mfa = asks_mfa
            || self
                .clients
                .get(&request.client_id)
                .is_some_and(|c| c.mfa == Some(castellan_core::MfaPolicy::Required));
        // max_age: a session older than the client accepts means a new login.
        let live = match session {
            Some(id) if request.max_age.is_some() || request.prompt_none => {
                engine.session(id).await?
            }
            _ => None,
        };
        if let (Some(max_age), Some(s)) = (request.max_age, &live) {
            // max_age=0 is prompt=login (OIDC Core §3.1.2.1).
            let age_ms = self.clock_millis().saturating_sub(s.authenticated_at);
            if max_age == 0 || age_ms > max_age.saturating_mul(1000) {
                request.renew = true;
            }
        }
        // prompt=none cannot ask for the second factor a session lacks.
        let lacks_second_factor = match &live {
            Some(s) if request.prompt_none && !s.methods.has_second_factor() => {
                let optional = self
                    .clients
                    .get(&request.client_id)
                    .is_some_and(|c| c.mfa == Some(castellan_core::MfaPolicy::Optional));
                requires_mfa || (optional && engine.is_enrolled(&s.principal.id).await?)
            }
            _ => false,
        };
        if lacks_second_factor {
            return Err(self.refuse(
                &request.redirect_uri,
                &request.response_mode,
                request.state.as_deref(),
                OAuthError::new(
                    ErrorCode::InteractionRequired,
                    "a second factor is required, and prompt=none forbids asking",
                ),
            ));
        }
        if request.prompt_none && request.renew {
            return Err(self.refuse(
                &request.redirect_uri,
                &request.response_mode,
                request.state.as_deref(),
                OAuthError::new(
                    ErrorCode::LoginRequired,
                    "a new login is required, and prompt=none forbids asking",
                ),
            ));
        }
        engine.admit_pending_flow(client)?;
        let id = new_ticket_id("OR");
        let records = self.records(engine.store().as_ref());
        let prompts_consent = params
            .get("prompt")
            .is_some_and(|p| p.split(' ').any(|v| v == "consent"));
        if prompts_consent {
            records
                .put(
                    &consent_prompt_key(&id),
                    &true,
                    engine.policy().login_flow_ttl,
                )
                .await
                .map_err(EngineError::from)?;
        }
        if let Some(claims) = &claims_request {
            records
                .put(
                    &request_claims_key(&id),
                    claims,
                    engine.policy().login_flow_ttl,
                )
                .await
                .map_err(EngineError::from)?;
        }
        if let Some(values) = acr_values {
            records
                .put(
                    &acr_request_key(&id),
                    values,
                    engine.policy().login_flow_ttl,
                )
                .await
                .map_err(EngineError::from)?;
        }
        records
            .put(&request_key(&id), &request, engine.policy().login_flow_ttl)
            .await
            .map_err(EngineError::from)?;
        let service = if asks_mfa {
            self.callbacks().build_asking_mfa(&request.client_id, &id)
        } else {
            self.callback_url(&request.client_id, &id)
        };
        Ok(LoginRequest {
            service,
            renew: request.renew,
            gateway: request.prompt_none,
            login_hint: checked.login_hint,
        })
    }

    /// `/oidc/callback?client_id=…&req=…[&ticket=…]`: the login came back.
    /// Answers the client with a code, or with why there is none.
    pub async fn callback(
        &self,
        engine: &Engine,
        client_id: &str,
        request_id: &str,
        ticket: Option<&str>,
        refusal: Option<ConsentRefusal>,
    ) -> Result<ClientAnswer, SignInError> {
        if request_id.len() > MAX_REQUEST_ID {
            return Err(SignInError::Expired);
        }
        let request: PendingRequest = self
            .records(engine.store().as_ref())
            .take(&request_key(request_id))
            .await
            .map_err(EngineError::from)?
            .ok_or(SignInError::Expired)?;
        engine.release_pending_flow();
        let client = self
            .clients
            .get(&request.client_id)
            .filter(|c| c.client_id == client_id)
            .ok_or(SignInError::Expired)?;
        let refuse = |error: OAuthError| {
            self.refuse(
                &request.redirect_uri,
                &request.response_mode,
                request.state.as_deref(),
                error,
            )
        };
        match (refusal, ticket) {
            // OIDC Core §3.1.2.6.
            (Some(ConsentRefusal::Declined), _) => {
                return Err(refuse(OAuthError::new(
                    ErrorCode::AccessDenied,
                    "the user declined to share their information",
                )))
            }
            (Some(ConsentRefusal::Required), None) => {
                return Err(refuse(OAuthError::new(
                    ErrorCode::ConsentRequired,
                    "the user's consent is required, and prompt=none forbids asking",
                )))
            }
            _ => {}
        }
        let Some(ticket) = ticket else {
            // CAS gateway came back without a ticket: there is no session.
            return Err(refuse(OAuthError::new(
                ErrorCode::LoginRequired,
                "the user is not signed in",
            )));
        };
        let _: Option<bool> = self
            .records(engine.store().as_ref())
            .take(&consent_prompt_key(request_id))
            .await
            .map_err(EngineError::from)?;
        let acr_values: Option<String> = self
            .records(engine.store().as_ref())
            .take(&acr_request_key(request_id))
            .await
            .map_err(EngineError::from)?;
        // The URL the login returned to: the ticket is bound to it, so an
        // MFA ask dropped on the way makes it fail here.
        let service = if acr_values.as_deref().is_some_and(crate::acr::asks_mfa) {
            self.callbacks().build_asking_mfa(client_id, request_id)
        } else {
            self.callback_url(client_id, request_id)
        };
        let assertion = match engine
            .validate_callback(ticket, &service, request.renew)
            .await
        {
            Ok(a) => a,
            Err(e @ EngineError::Store(_)) => return Err(SignInError::Unavailable(e)),
            Err(e) => {
                tracing::warn!(error = %e, client = %client.name, "OIDC callback with an invalid ticket");
                return Err(SignInError::NotConfirmed(e));
            }
        };
        let auth_time = assertion.authenticated_at / 1000;
        if let Some(max_age) = request.max_age {
            if self.now().saturating_sub(auth_time) > max_age && !assertion.from_new_login {
                return Err(refuse(OAuthError::new(
                    ErrorCode::LoginRequired,
                    "the login is older than max_age",
                )));
            }
        }
        let offline = request.scopes.iter().any(|s| s == "offline_access")
            && client.grant_types.refresh_token;
        let code = new_ticket_id("OC");
        let grant_id = new_ticket_id("OG");
        let authn = AuthnContext {
            amr: assertion
                .methods
                .amr()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            acr: crate::acr::of_login(
                acr_values.as_deref(),
                assertion.methods,
                assertion.from_new_login,
            ),
        };
        let authn_ttl = if offline {
            self.settings.offline_token_ttl
        } else {
            self.settings.refresh_token_ttl
        }
        .max(self.settings.code_ttl);
        self.records(engine.store().as_ref())
            .put(&authn_key(&grant_id), &authn, authn_ttl)
            .await
            .map_err(EngineError::from)?;
        let claims_request: Option<ClaimsRequest> = self
            .records(engine.store().as_ref())
            .take(&request_claims_key(request_id))
            .await
            .map_err(EngineError::from)?;
        if let Some(claims) = claims_request {
            self.records(engine.store().as_ref())
                .put(&grant_claims_key(&grant_id), &claims, authn_ttl)
                .await
                .map_err(EngineError::from)?;
        }
        let record = CodeRecord::Live(Box::new(Code {
            client_id: client.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            nonce: request.nonce.clone(),
            grant_id,
            grant: Grant {
                client_id: client.client_id.clone(),
                principal_id: assertion.principal.id.clone(),
                attributes: assertion.attributes,
                scopes: request.scopes.clone(),
                session_id: assertion.session_id,
                auth_time,
                fresh_login: assertion.from_new_login,
                offline,
            },
        }));
        self.records(engine.store().as_ref())
            .put(&code_key(&code), &record, self.settings.code_ttl)
            .await
            .map_err(EngineError::from)?;
        let mut params = vec![("code", code)];
        if let Some(s) = &request.state {
            params.push(("state", s.clone()));
        }
        params.push(("iss", self.issuer.clone()));
        Ok(ClientAnswer {
            redirect_uri: request.redirect_uri,
            response_mode: request.response_mode,
            params,
        })
    }
}
