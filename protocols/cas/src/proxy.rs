//! `/proxy` (CAS 3.0 §2.7): a proxy ticket from a PGT for a target service.

use crate::error::{CasError, CasErrorCode};
use crate::response::{self, CasResponse};
use crate::{MAX_SERVICE_LEN, MAX_TICKET_LEN};
use castellan_core::Engine;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct ProxyParams {
    pub pgt: Option<String>,
    #[serde(rename = "targetService")]
    pub target_service: Option<String>,
    pub format: Option<String>,
}

pub async fn proxy(engine: &Engine, params: &ProxyParams) -> CasResponse {
    let outcome = run(engine, params).await;
    if params
        .format
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("json"))
    {
        response::proxy_json(&outcome)
    } else {
        response::proxy_xml(&outcome)
    }
}

async fn run(engine: &Engine, params: &ProxyParams) -> Result<String, CasError> {
    let (Some(pgt), Some(target)) = (
        params.pgt.as_deref().filter(|p| !p.is_empty()),
        params.target_service.as_deref().filter(|t| !t.is_empty()),
    ) else {
        return Err(CasError::new(
            CasErrorCode::InvalidRequest,
            "'pgt' and 'targetService' parameters are both required",
        ));
    };
    if target.len() > MAX_SERVICE_LEN || pgt.len() > MAX_TICKET_LEN {
        return Err(CasError::new(
            CasErrorCode::InvalidRequest,
            "parameter too long",
        ));
    }
    engine
        .grant_proxy_ticket(pgt, target)
        .await
        .map(|pt| pt.id)
        .map_err(|e| CasError::from_engine(e, pgt))
}
