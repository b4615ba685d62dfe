//! The SAML 2.0 identity provider of Castellan, a client of the CAS core:
//! an AuthnRequest is checked and kept in the ticket store while the browser
//! logs in at `/login`; the service ticket that comes back is validated
//! through the engine and turned into a signed Response.
//!
//! This crate holds the IdP's rules, independent of the web framework: its
//! credentials and metadata, the registered service providers, the
//! bindings, request checks, NameIDs, the XML the IdP writes, the records
//! it keeps between requests, the front-channel logout chain and its
//! single-logout participant (which sends the SOAP requests). samael (libxml2 + xmlsec) parses SAML objects
//! and makes and verifies XML signatures; what it does not cover (the
//! Redirect binding's query signatures, encryption) is done here with
//! openssl and tested.

pub mod authn_context;
pub mod binding;
pub mod config;
pub mod error;
pub mod idp;
pub mod keys;
pub mod participant;
pub mod records;
pub mod request;
pub mod response;
pub mod settings;
pub mod slo;
pub mod sp;
pub mod sp_side;
pub mod sso;
pub mod xml;

pub use error::SamlError;
pub use idp::{IdentityProvider, NameId};
pub use keys::IdpCredentials;
pub use participant::SamlLogout;
pub use settings::SamlSettings;
pub use slo::{LogoutAnswer, LogoutStep, PARTICIPANT};
pub use sp::{ServiceProvider, SignMode};
pub use sso::{Answer, PostForm, SamlMessage, SsoNext, ToLogin};

pub const PROTOCOL_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const ASSERTION_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
pub const BINDING_SOAP: &str = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP";

pub mod status {
    pub const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
    pub const REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";
    pub const RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
    pub const NO_PASSIVE: &str = "urn:oasis:names:tc:SAML:2.0:status:NoPassive";
    pub const AUTHN_FAILED: &str = "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed";
    pub const REQUEST_DENIED: &str = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied";
    pub const PARTIAL_LOGOUT: &str = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout";
    pub const INVALID_NAME_ID_POLICY: &str =
        "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy";
    pub const NO_AUTHN_CONTEXT: &str = "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext";
}

pub mod nameid {
    pub const UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";
    pub const EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
    pub const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
    pub const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
    pub const ALL: [&str; 4] = [UNSPECIFIED, EMAIL, PERSISTENT, TRANSIENT];
}

#[cfg(test)]
mod tests;
