//! The provider's metadata (OpenID Connect Discovery 1.0 §3), built with
//! openidconnect's types so that its names and shapes are the standard's.

/// The metadata could not be built: the issuer is not a usable URL.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the OIDC issuer is not a valid URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("the discovery document could not be written: {0}")]
    Json(#[from] serde_json::Error),
}

/// OpenID Connect Discovery 1.0 metadata, built with openidconnect's types.
pub fn document(issuer: &str) -> Result<String, DiscoveryError> {
    use openidconnect::core::{
        CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
        CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
        CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
    };
    use openidconnect::{
        AdditionalProviderMetadata, AuthUrl, IssuerUrl, JsonWebKeySetUrl, ProviderMetadata,
        ResponseTypes, Scope, TokenUrl, UserInfoUrl,
    };
    #[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
    struct Extra {
        introspection_endpoint: String,
        revocation_endpoint: String,
        end_session_endpoint: String,
        code_challenge_methods_supported: Vec<String>,
        introspection_endpoint_auth_methods_supported: Vec<String>,
        revocation_endpoint_auth_methods_supported: Vec<String>,
        backchannel_logout_supported: bool,
        backchannel_logout_session_supported: bool,
        authorization_response_iss_parameter_supported: bool,
        request_parameter_supported: bool,
        request_uri_parameter_supported: bool,
        dpop_signing_alg_values_supported: Vec<String>,
        device_authorization_endpoint: String,
        // private_key_jwt (RFC 7523), PAR (RFC 9126), claims (OIDC Core §5.5).
        introspection_endpoint_auth_signing_alg_values_supported: Vec<String>,
        revocation_endpoint_auth_signing_alg_values_supported: Vec<String>,
        pushed_authorization_request_endpoint: String,
        require_pushed_authorization_requests: bool,
    }
    impl AdditionalProviderMetadata for Extra {}
    type Metadata = ProviderMetadata<
        Extra,
        CoreAuthDisplay,
        CoreClientAuthMethod,
        CoreClaimName,
        CoreClaimType,
        CoreGrantType,
        CoreJweContentEncryptionAlgorithm,
        CoreJweKeyManagementAlgorithm,
        CoreJsonWebKey,
        CoreResponseMode,
        CoreResponseType,
        CoreSubjectIdentifierType,
    >;
    let secret_methods = vec![
        "client_secret_basic".to_owned(),
        "client_secret_post".to_owned(),
        "private_key_jwt".to_owned(),
    ];
    let assertion_algs: Vec<String> = crate::client_assertion::ALGORITHMS
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    let metadata = Metadata::new(
        IssuerUrl::new(issuer.to_owned())?,
        AuthUrl::new(format!("{issuer}/authorize"))?,
        JsonWebKeySetUrl::new(format!("{issuer}/jwks"))?,
        vec![ResponseTypes::new(vec![CoreResponseType::Code])],
        vec![
            CoreSubjectIdentifierType::Public,
            CoreSubjectIdentifierType::Pairwise,
        ],
        vec![
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        ],
        Extra {
            introspection_endpoint: format!("{issuer}/introspect"),
            revocation_endpoint: format!("{issuer}/revoke"),
            end_session_endpoint: format!("{issuer}/logout"),
            code_challenge_methods_supported: vec!["S256".into()],
            introspection_endpoint_auth_methods_supported: secret_methods.clone(),
            revocation_endpoint_auth_methods_supported: secret_methods,
            backchannel_logout_supported: true,
            backchannel_logout_session_supported: true,
            authorization_response_iss_parameter_supported: true,
            request_parameter_supported: false,
            request_uri_parameter_supported: false,
            dpop_signing_alg_values_supported: crate::dpop::ALGORITHMS
                .iter()
                .map(|a| (*a).to_owned())
                .collect(),
            device_authorization_endpoint: format!("{issuer}/device_authorization"),
            introspection_endpoint_auth_signing_alg_values_supported: assertion_algs.clone(),
            revocation_endpoint_auth_signing_alg_values_supported: assertion_algs,
            pushed_authorization_request_endpoint: format!("{issuer}/par"),
            require_pushed_authorization_requests: false,
        },
    )
    .set_token_endpoint(Some(TokenUrl::new(format!("{issuer}/token"))?))
    .set_userinfo_endpoint(Some(UserInfoUrl::new(format!("{issuer}/userinfo"))?))
    .set_scopes_supported(Some(
        ["openid", "profile", "email", "phone", "offline_access"]
            .into_iter()
            .map(|s| Scope::new(s.into()))
            .collect(),
    ))
    .set_response_modes_supported(Some(vec![
        CoreResponseMode::Query,
        CoreResponseMode::FormPost,
    ]))
    .set_grant_types_supported(Some(vec![
        CoreGrantType::AuthorizationCode,
        CoreGrantType::RefreshToken,
        CoreGrantType::ClientCredentials,
        CoreGrantType::DeviceCode,
        CoreGrantType::Extension(crate::exchange::GRANT_TYPE.to_owned()),
    ]))
    .set_token_endpoint_auth_methods_supported(Some(vec![
        CoreClientAuthMethod::ClientSecretBasic,
        CoreClientAuthMethod::ClientSecretPost,
        CoreClientAuthMethod::PrivateKeyJwt,
        CoreClientAuthMethod::None,
    ]))
    .set_token_endpoint_auth_signing_alg_values_supported(Some(vec![
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    ]))
    .set_claims_parameter_supported(Some(true))
    .set_claims_supported(Some(
        [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "acr",
            "sid",
            "name",
            "given_name",
            "family_name",
            "preferred_username",
            "email",
            "email_verified",
            "phone_number",
        ]
        .into_iter()
        .map(|c| CoreClaimName::new(c.into()))
        .collect(),
    ))
    .set_acr_values_supported(Some(
        crate::acr::supported()
            .into_iter()
            .map(|v| openidconnect::AuthenticationContextClass::new(v.into()))
            .collect(),
    ));
    Ok(serde_json::to_string(&metadata)?)
}
