//! The ID token of a grant, issued beside an access token: at the code
//! redemption, and at a refresh for the clients that ask for it
//! (`id_token_on_refresh`; OIDC Core §12.2: same `iss`, `sub`, `aud`,
//! `auth_time` as the first one, no `nonce`). Both carry the `id_token`
//! member of the grant's `claims` request.

use crate::claims::{add_requested, grant_claims_key, ClaimsRequest};
use crate::client::OidcClient;
use crate::error::OAuthError;
use crate::keys::Keyring;
use crate::provider::Provider;
use crate::records::{authn_key, AuthnContext, Grant, Records};
use crate::tokens::{id_token_claims, sign};

impl Provider {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn grant_id_token(
        &self,
        records: &Records<'_>,
        keys: &Keyring,
        client: &OidcClient,
        sub: &str,
        grant: &Grant,
        grant_id: &str,
        nonce: Option<&str>,
        access_token: &str,
    ) -> Result<String, OAuthError> {
        let authn: Option<AuthnContext> = records.get(&authn_key(grant_id)).await?;
        let mut claims = id_token_claims(
            &self.issuer,
            client,
            sub,
            grant,
            nonce,
            access_token,
            self.now(),
            self.settings.id_token_ttl.as_secs(),
            authn.as_ref(),
        );
        let requested: Option<ClaimsRequest> = records.get(&grant_claims_key(grant_id)).await?;
        if let Some(requested) = requested {
            add_requested(
                &mut claims,
                requested.id_token.iter().map(String::as_str),
                client,
                &grant.principal_id,
                &grant.attributes,
            );
        }
        sign(keys, client.id_token_alg, "JWT", &claims).map_err(|e| {
            tracing::error!(error = %e, "ID token signing failed");
            OAuthError::server_error()
        })
    }
}
