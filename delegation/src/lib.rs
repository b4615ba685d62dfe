//! Delegated authentication: connectors that hand a login off to an upstream
//! CAS server, OAuth2/OIDC provider or SAML2 IdP. Not built yet: the CAS
//! server issue lays out the workspace; the delegation issue fills this crate.
