//! The validation endpoints: `/validate`, `/serviceValidate`, `/proxyValidate`,
//! `/p3/serviceValidate`, `/p3/proxyValidate`.

use crate::error::{CasError, CasErrorCode};
use crate::response::{self, CasResponse};
use crate::{MAX_SERVICE_LEN, MAX_TICKET_LEN};
use castellan_core::{Assertion, Engine, ValidationRequest};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationEndpoint {
    /// CAS 1.0 `/validate`: text, service tickets only.
    Cas1,
    ServiceValidate,
    ProxyValidate,
    P3ServiceValidate,
    P3ProxyValidate,
}

impl ValidationEndpoint {
    fn accepts_proxy_tickets(self) -> bool {
        matches!(self, Self::ProxyValidate | Self::P3ProxyValidate)
    }

    fn releases_attributes(self) -> bool {
        matches!(self, Self::P3ServiceValidate | Self::P3ProxyValidate)
    }
}

/// Query parameters of every validation endpoint (§2.4.1, §2.5.1).
#[derive(Debug, Default, Deserialize)]
pub struct ValidateParams {
    pub service: Option<String>,
    pub ticket: Option<String>,
    pub renew: Option<String>,
    #[serde(rename = "pgtUrl")]
    pub pgt_url: Option<String>,
    pub format: Option<String>,
}

/// `renew` is on when present with any value but "false" (§2.5.1: "if set").
pub fn flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.eq_ignore_ascii_case("false"))
}

/// Checks the parameters every validation shares; returns (ticket, service).
pub fn required<'a>(
    ticket: Option<&'a str>,
    service: Option<&'a str>,
) -> Result<(&'a str, &'a str), CasError> {
    let (Some(ticket), Some(service)) = (
        ticket.filter(|t| !t.is_empty()),
        service.filter(|s| !s.is_empty()),
    ) else {
        return Err(CasError::new(
            CasErrorCode::InvalidRequest,
            "'service' and 'ticket' parameters are both required",
        ));
    };
    if service.len() > MAX_SERVICE_LEN {
        return Err(CasError::new(
            CasErrorCode::InvalidRequest,
            "'service' is too long",
        ));
    }
    if ticket.len() > MAX_TICKET_LEN {
        return Err(CasError::new(
            CasErrorCode::InvalidTicketSpec,
            "'ticket' is too long",
        ));
    }
    Ok((ticket, service))
}

/// Runs one validation and renders it for `endpoint`.
pub async fn validate(
    engine: &Engine,
    endpoint: ValidationEndpoint,
    params: &ValidateParams,
) -> CasResponse {
    let outcome = run(engine, endpoint, params).await;
    if let Err(e) = &outcome {
        tracing::info!(code = e.code.as_str(), "validation failed");
    }
    let as_json = params
        .format
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("json"));
    match endpoint {
        ValidationEndpoint::Cas1 => response::cas1(&outcome),
        _ if as_json => response::json(&outcome, endpoint.releases_attributes()),
        _ => response::xml(&outcome, endpoint.releases_attributes()),
    }
}

async fn run(
    engine: &Engine,
    endpoint: ValidationEndpoint,
    params: &ValidateParams,
) -> Result<Assertion, CasError> {
    // §2.5.1: XML or JSON; anything else is refused before the ticket is touched.
    if let Some(format) = params.format.as_deref() {
        if !format.eq_ignore_ascii_case("xml") && !format.eq_ignore_ascii_case("json") {
            return Err(CasError::new(
                CasErrorCode::InvalidRequest,
                "'format' must be XML or JSON",
            ));
        }
    }
    let (ticket, service) = required(params.ticket.as_deref(), params.service.as_deref())?;
    let pgt_url = match endpoint {
        // CAS 1.0 knows no proxying.
        ValidationEndpoint::Cas1 => None,
        _ => params.pgt_url.as_deref().filter(|u| !u.is_empty()),
    };
    if pgt_url.is_some_and(|u| u.len() > MAX_SERVICE_LEN) {
        return Err(CasError::new(
            CasErrorCode::InvalidProxyCallback,
            "'pgtUrl' is too long",
        ));
    }
    engine
        .validate(ValidationRequest {
            ticket,
            service,
            renew: flag(params.renew.as_deref()),
            pgt_url,
            allow_proxy_tickets: endpoint.accepts_proxy_tickets(),
            in_process: false,
        })
        .await
        .map_err(|e| CasError::from_engine(e, ticket))
}
