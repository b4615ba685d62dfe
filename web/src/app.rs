//! The routes and the middleware around them.

use crate::state::SharedState;
use crate::{
    cas_endpoints, consent_page, delegation, login, logout, mfa_page, middleware, oidc, oidc_cors,
    operations, saml, second_step,
};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

/// The whole application: every route at its full path under the prefix
/// (no `nest`: it would wrap each route once more), and everything around
/// the routes as one service around the router ([`middleware::wrap`]).
pub fn router(state: SharedState, https: bool) -> middleware::App {
    use castellan_oidc::cors::CorsEndpoint;
    let prefix = state.prefix().to_owned();
    let at = |path: &str| format!("{prefix}{path}");
    // CORS for browser apps, on the endpoints they call (and preflight).
    let cors = |endpoint| {
        axum::middleware::from_fn_with_state((state.clone(), endpoint), oidc_cors::layer)
    };
    let endpoints = Router::new()
        .route(&at("/login"), get(login::form).post(login::submit))
        .route(&at("/login/mfa"), post(second_step::submit))
        .route(&at("/login/consent"), post(consent_page::decide))
        .route(&at("/mfa"), get(mfa_page::page).post(mfa_page::act))
        .route(&at("/logout"), get(logout::logout))
        .route(&at("/validate"), get(cas_endpoints::validate))
        .route(
            &at("/serviceValidate"),
            get(cas_endpoints::service_validate),
        )
        .route(&at("/proxyValidate"), get(cas_endpoints::proxy_validate))
        .route(
            &at("/p3/serviceValidate"),
            get(cas_endpoints::p3_service_validate),
        )
        .route(
            &at("/p3/proxyValidate"),
            get(cas_endpoints::p3_proxy_validate),
        )
        .route(&at("/proxy"), get(cas_endpoints::proxy))
        .route(
            &at("/samlValidate"),
            post(cas_endpoints::saml_validate).layer(DefaultBodyLimit::max(
                castellan_cas::saml11::MAX_REQUEST_BYTES,
            )),
        )
        .route(
            &at("/oidc/jwks"),
            get(operations::jwks).layer(cors(CorsEndpoint::Jwks)),
        )
        .route(
            &at("/oidc/.well-known/openid-configuration"),
            get(oidc::configuration).layer(cors(CorsEndpoint::Discovery)),
        )
        .route(
            &at("/oidc/authorize"),
            get(oidc::authorize_get).post(oidc::authorize_post),
        )
        // A device's login (RFC 8628) comes back there too.
        .route(&at("/oidc/callback"), get(oidc::device::callback))
        .route(
            &at("/oidc/device_authorization"),
            post(oidc::device::authorization),
        )
        .route(
            &at("/oidc/device"),
            get(oidc::device::form).post(oidc::device::submit),
        )
        .route(
            &at("/oidc/token"),
            post(oidc::token).layer(cors(CorsEndpoint::Token)),
        )
        .route(
            &at("/oidc/par"),
            post(oidc::par).layer(cors(CorsEndpoint::PushedAuthorization)),
        )
        .route(
            &at("/oidc/userinfo"),
            get(oidc::userinfo_get)
                .post(oidc::userinfo_post)
                .layer(cors(CorsEndpoint::Userinfo)),
        )
        .route(&at("/oidc/introspect"), post(oidc::introspect))
        .route(
            &at("/oidc/revoke"),
            post(oidc::revoke).layer(cors(CorsEndpoint::Revocation)),
        )
        .route(
            &at("/oidc/logout"),
            get(oidc::logout_get).post(oidc::logout_post),
        )
        .route(&at("/idp/metadata"), get(saml::metadata))
        .route(
            &at("/idp/profile/SAML2/Redirect/SSO"),
            get(saml::sso_redirect),
        )
        .route(&at("/idp/profile/SAML2/POST/SSO"), post(saml::sso_post))
        .route(
            &at("/idp/profile/SAML2/Unsolicited/SSO"),
            get(saml::unsolicited),
        )
        .route(
            &at("/idp/profile/SAML2/Redirect/SLO"),
            get(saml::slo_redirect),
        )
        .route(&at("/idp/profile/SAML2/POST/SLO"), post(saml::slo_post))
        .route(&at("/idp/callback"), get(saml::callback))
        .route(&at("/delegated/{name}/callback"), get(delegation::callback))
        .route(&at("/delegated/{name}/metadata"), get(delegation::metadata))
        .route(&at("/delegated/{name}/acs"), post(delegation::acs))
        .route(&at("/health"), get(operations::health))
        .route(&at("/metrics"), get(operations::metrics))
        .route(&at("/static/{file}"), get(operations::static_file))
        .route(
            &at("/static/themes/{name}/{file}"),
            get(operations::theme_file),
        )
        .with_state(state.clone());
    middleware::wrap(endpoints, state, https)
}
