//! The routes and the middleware around them.

use crate::state::SharedState;
use crate::{
    cas_endpoints, consent_page, delegation, login, logout, mfa_page, middleware, oidc, oidc_cors,
    operations, saml, second_step,
};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

/// Largest request body accepted by any endpoint (login forms, SOAP).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: SharedState) -> Router {
    let cors = |endpoint| {
        axum::middleware::from_fn_with_state((state.clone(), endpoint), oidc_cors::layer)
    };
    use castellan_oidc::cors::CorsEndpoint;
    let endpoints = Router::new()
        .route("/login", get(login::form).post(login::submit))
        .route("/login/mfa", post(second_step::submit))
        .route("/login/consent", post(consent_page::decide))
        .route("/mfa", get(mfa_page::page).post(mfa_page::act))
        .route("/logout", get(logout::logout))
        .route("/validate", get(cas_endpoints::validate))
        .route("/serviceValidate", get(cas_endpoints::service_validate))
        .route("/proxyValidate", get(cas_endpoints::proxy_validate))
        .route(
            "/p3/serviceValidate",
            get(cas_endpoints::p3_service_validate),
        )
        .route("/p3/proxyValidate", get(cas_endpoints::p3_proxy_validate))
        .route("/proxy", get(cas_endpoints::proxy))
        .route(
            "/samlValidate",
            post(cas_endpoints::saml_validate).layer(DefaultBodyLimit::max(
                castellan_cas::saml11::MAX_REQUEST_BYTES,
            )),
        )
        .route(
            "/oidc/jwks",
            get(operations::jwks).layer(cors(CorsEndpoint::Jwks)),
        )
        .route(
            "/oidc/.well-known/openid-configuration",
            get(oidc::configuration).layer(cors(CorsEndpoint::Discovery)),
        )
        .route(
            "/oidc/authorize",
            get(oidc::authorize_get).post(oidc::authorize_post),
        )
        .route("/oidc/callback", get(oidc::callback))
        .route(
            "/oidc/token",
            post(oidc::token).layer(cors(CorsEndpoint::Token)),
        )
        .route(
            "/oidc/par",
            post(oidc::par).layer(cors(CorsEndpoint::PushedAuthorization)),
        )
        .route(
            "/oidc/userinfo",
            get(oidc::userinfo_get)
                .post(oidc::userinfo_post)
                .layer(cors(CorsEndpoint::Userinfo)),
        )
        .route("/oidc/introspect", post(oidc::introspect))
        .route(
            "/oidc/revoke",
            post(oidc::revoke).layer(cors(CorsEndpoint::Revocation)),
        )
        .route(
            "/oidc/logout",
            get(oidc::logout_get).post(oidc::logout_post),
        )
        .route("/idp/metadata", get(saml::metadata))
        .route("/idp/profile/SAML2/Redirect/SSO", get(saml::sso_redirect))
        .route("/idp/profile/SAML2/POST/SSO", post(saml::sso_post))
        .route("/idp/profile/SAML2/Unsolicited/SSO", get(saml::unsolicited))
        .route("/idp/profile/SAML2/Redirect/SLO", get(saml::slo_redirect))
        .route("/idp/profile/SAML2/POST/SLO", post(saml::slo_post))
        .route("/idp/callback", get(saml::callback))
        .route("/delegated/{name}/callback", get(delegation::callback))
        .route("/delegated/{name}/metadata", get(delegation::metadata))
        .route("/delegated/{name}/acs", post(delegation::acs))
        .route("/health", get(operations::health))
        .route("/metrics", get(operations::metrics))
        .route("/static/{file}", get(operations::static_file))
        .route("/static/themes/{name}/{file}", get(operations::theme_file))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::locale::layer,
        ))
        .with_state(state.clone());
    let prefix = state.prefix().to_owned();
    let app = if prefix.is_empty() {
        endpoints
    } else {
        Router::new().nest(&prefix, endpoints)
    };
    // Inside `wrap`: the request id exists when the audit context is set.
    let app = app.layer(axum::middleware::from_fn_with_state(
        state,
        middleware::audit_scope,
    ));
    middleware::wrap(app.layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
}
