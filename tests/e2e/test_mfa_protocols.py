"""What SAML 2.0 and OpenID Connect say about, and ask of, the second factor.

SAML: a pysaml2 service provider (saml_sp.ServiceProvider) sends
AuthnRequests with and without a RequestedAuthnContext; pysaml2 checks the
Response (signature, audience, InResponseTo...) and reports the
AuthnContextClassRef (authn_info()); a context the IdP cannot provide
(Kerberos, exact) must come back as Responder / NoAuthnContext, which pysaml2
turns into StatusNoAuthnContext.

OIDC: plain `requests` as the relying party (conftest.OidcBrowser for the
front channel, token endpoint and PyJWT verification of the ID token against
/oidc/jwks): `amr` and `acr` in the ID token, `acr_values` asking for MFA from
a client without `mfa`, a client with `mfa = "required"`, step-up of a
password session, `prompt=login`, and `prompt=none` -> interaction_required.

One Castellan for the module, users of its own for each test (TOTP steps are
used once per factor).
"""

from __future__ import annotations

import time
import warnings

import pytest
from saml2.saml import AuthnContextClassRef
from saml2.samlp import RequestedAuthnContext

from conftest import Oidc, OidcBrowser, OidcClient, pkce_pair, token_json
from mfa_helpers import (
    REFEDS_MFA,
    REFEDS_SFA,
    MfaBrowser,
    MfaCastellan,
    Totp,
    mfa_users,
    password_of,
    second_step,
    ticket_of,
)
from saml_sp import (
    NAMEID_PERSISTENT,
    NSMAP,
    PASSWORD_PROTECTED_TRANSPORT,
    STATUS_RESPONDER,
    STATUS_SUCCESS,
    IdpMetadata,
    SamlBrowser,
    ServiceProvider,
    make_keypair,
    status_codes,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from saml2.response import StatusNoAuthnContext

NO_AUTHN_CONTEXT = "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext"
KERBEROS = "urn:oasis:names:tc:SAML:2.0:ac:classes:Kerberos"
SVC = "https://mfa.example.test/app"  # a CAS service with mfa = "required", to enrol users

NAMES = [
    "saml-mfa", "saml-plain", "saml-step", "saml-kerb", "saml-force",
    "oidc-plain", "oidc-acr", "oidc-short", "oidc-none", "oidc-client", "oidc-step", "oidc-keep", "oidc-login",
]

PLAIN_RP = OidcClient("rp-plain", "https://rp-plain.example.test/cb", "plain-secret-0123456789")
MFA_RP = OidcClient("rp-mfa", "https://rp-mfa.example.test/cb", "mfa-secret-0123456789")


class MfaSamlBrowser(SamlBrowser, MfaBrowser):
    pass


class MfaOidcBrowser(OidcBrowser, MfaBrowser):
    pass


@pytest.fixture(scope="module")
def sp(tmp_path_factory) -> ServiceProvider:
    s = ServiceProvider(tmp_path_factory.mktemp("mfa-sp"), "sp-mfa", name_id_format=NAMEID_PERSISTENT,
                        service={"release": ["mail"]})
    s.write_metadata()
    return s


@pytest.fixture(scope="module")
def cas(tmp_path_factory, pki, sp) -> MfaCastellan:
    key, cert = make_keypair(tmp_path_factory.mktemp("mfa-idp-key"), "idp", "Castellan e2e MFA IdP")
    services = [
        {"name": "mfa-app", "protocol": "cas", "service": r"^https://mfa\.example\.test(/.*)?$",
         "release": ["mail"], "mfa": "required"},
        PLAIN_RP.service(scopes=["openid", "profile", "email"], release=["mail", "cn"]),
        MFA_RP.service(scopes=["openid", "profile", "email"], release=["mail", "cn"], mfa="required"),
        sp.service(),
    ]
    c = MfaCastellan(tmp_path_factory.mktemp("castellan-mfa-protocols"), label="castellan-mfa-protocols",
                     users=mfa_users(NAMES), services=services, ssl_cert_file=pki.ca_pem,
                     throttle={"failures_per_user": 5, "failures_per_ip": 1000, "window": "5m"},
                     saml={"clock_skew": "60s", "request_max_age": "5m", "assertion_ttl": "5m",
                           "signing_key": str(key), "signing_certificate": str(cert)})
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def idp(cas, sp, tmp_path_factory) -> IdpMetadata:
    md = IdpMetadata.fetch(cas.url("/idp/metadata"), tmp_path_factory.mktemp("mfa-idp-md") / "idp.xml")
    sp.attach(md)
    return md


def enrol(cas, username: str) -> Totp:
    """Give `username` a TOTP factor (through the CAS service), return the app."""
    b = MfaBrowser(cas)
    e = b.enrol(SVC, username)
    ticket_of(e.final, SVC)
    return e.totp


# --------------------------------------------------------------------------
# SAML
# --------------------------------------------------------------------------


def rac(*refs: str, comparison: str = "exact") -> RequestedAuthnContext:
    return RequestedAuthnContext(authn_context_class_ref=[AuthnContextClassRef(text=r) for r in refs],
                                 comparison=comparison)


def saml_sso(b: MfaSamlBrowser, sp: ServiceProvider, username: str, **kw):
    """The AuthnRequest; logs in with the password when the login form shows."""
    return b.sso(sp, username=username, password=password_of(username), **kw)


def finish_second_step(b: MfaSamlBrowser, flow, totp_box: dict, code: str | None = None):
    """If the flow stopped at the second step: answer it (enrolling when asked) and walk on."""
    st = second_step(flow.final)
    assert st is not None, f"expected the second step:\n{flow.trace()}"
    if st.enrolment:
        totp_box["totp"] = Totp(st.otpauth_uri)
    r = b.send_code(st, code or totp_box["totp"].fresh())
    nxt = b.walk(r, login=False)
    nxt.request_id, nxt.relay_state, nxt.sent_xml = flow.request_id, flow.relay_state, flow.sent_xml
    nxt.hops = flow.hops + nxt.hops
    return nxt, st


def class_ref(flow, sp: ServiceProvider) -> str:
    """pysaml2 accepts the Response; the AuthnContextClassRef it reports (checked by hand too)."""
    form = flow.form
    root = form.tree()
    assert status_codes(root) == [STATUS_SUCCESS], f"{status_codes(root)}:\n{flow.trace()}"
    resp = sp.accept(form.saml_response, flow.request_id)
    infos = resp.authn_info()
    assert len(infos) == 1, infos
    ref = root.findtext("saml:Assertion/saml:AuthnStatement/saml:AuthnContext/saml:AuthnContextClassRef",
                        namespaces=NSMAP)
    assert ref == infos[0][0], (ref, infos)
    return ref


def test_saml_requested_mfa_gets_the_second_step_and_says_so(cas, idp, sp):
    b = MfaSamlBrowser(cas)
    box: dict = {}
    flow = saml_sso(b, sp, "saml-mfa", requested_authn_context=rac(REFEDS_MFA))
    assert flow.forms_seen == 1, flow.trace()
    flow, st = finish_second_step(b, flow, box)
    assert st.enrolment, "saml-mfa has no factor: expected enrolment"
    assert class_ref(flow, sp) == REFEDS_MFA
    # the session has MFA: another request, Comparison minimum, is served silently
    flow = saml_sso(b, sp, "saml-mfa", requested_authn_context=rac(REFEDS_MFA, comparison="minimum"))
    assert flow.forms_seen == 0 and second_step(flow.final) is None, f"asked again:\n{flow.trace()}"
    assert class_ref(flow, sp) == REFEDS_MFA


def test_saml_without_requested_context_is_password_protected_transport(cas, idp, sp):
    b = MfaSamlBrowser(cas)
    flow = saml_sso(b, sp, "saml-plain")
    assert flow.forms_seen == 1 and second_step(flow.final) is None, flow.trace()
    assert class_ref(flow, sp) == PASSWORD_PROTECTED_TRANSPORT


def test_saml_step_up_asks_only_for_the_code(cas, idp, sp):
    totp = enrol(cas, "saml-step")
    b = MfaSamlBrowser(cas)
    flow = saml_sso(b, sp, "saml-step")  # no RequestedAuthnContext: the password is enough
    assert second_step(flow.final) is None, flow.trace()
    assert class_ref(flow, sp) == PASSWORD_PROTECTED_TRANSPORT
    flow = saml_sso(b, sp, "saml-step", requested_authn_context=rac(REFEDS_MFA), login=False)
    assert flow.forms_seen == 0, f"step-up asked for the password:\n{flow.trace()}"
    st = second_step(flow.final)
    assert st is not None and not st.enrolment and not st.page.has_password_field(), flow.trace()
    flow, _ = finish_second_step(b, flow, {"totp": totp})
    assert class_ref(flow, sp) == REFEDS_MFA


def test_saml_force_authn_asks_for_both_again(cas, idp, sp):
    b = MfaSamlBrowser(cas)
    box: dict = {}
    flow, _ = finish_second_step(b, saml_sso(b, sp, "saml-force", requested_authn_context=rac(REFEDS_MFA)), box)
    assert class_ref(flow, sp) == REFEDS_MFA
    flow = saml_sso(b, sp, "saml-force", requested_authn_context=rac(REFEDS_MFA), force_authn="true")
    assert flow.forms_seen == 1, f"ForceAuthn: the password form was not shown:\n{flow.trace()}"
    flow, st = finish_second_step(b, flow, box)
    assert not st.enrolment
    assert class_ref(flow, sp) == REFEDS_MFA


def test_saml_context_the_idp_cannot_provide_gets_no_authn_context(cas, idp, sp):
    b = MfaSamlBrowser(cas)
    flow = saml_sso(b, sp, "saml-kerb", requested_authn_context=rac(KERBEROS))
    assert second_step(flow.final) is None, f"asked for a second factor for Kerberos:\n{flow.trace()}"
    form = flow.form
    root = form.tree()
    assert status_codes(root) == [STATUS_RESPONDER, NO_AUTHN_CONTEXT], f"{status_codes(root)}:\n{flow.trace()}"
    assert root.find("saml:Assertion", NSMAP) is None and root.find("saml:EncryptedAssertion", NSMAP) is None
    with pytest.raises(StatusNoAuthnContext):
        sp.accept(form.saml_response, flow.request_id)


# --------------------------------------------------------------------------
# OpenID Connect
# --------------------------------------------------------------------------


def oidc_login(b: MfaOidcBrowser, client: OidcClient, username: str, *, totp_box: dict | None = None,
               expect_password: bool = True, expect_code: bool = True, **extra):
    """Authorize (code flow, PKCE), password when asked, the second step when
    asked; redeem the code: (ID token claims, AuthzResult, the second step or None)."""
    verifier, _ = pkce_pair()
    res = b.authorize(client, verifier=verifier, username=username, password=password_of(username), **extra)
    assert res.forms_seen == (1 if expect_password else 0), f"password form shown {res.forms_seen} times:\n{res.trace()}"
    st = None
    if res.code is None and expect_code:
        st = second_step(res.final)
        assert st is not None, f"expected the second step:\n{res.trace()}"
        assert not st.page.has_password_field()
        if st.enrolment:
            totp_box["totp"] = Totp(st.otpauth_uri)
        r = b.send_code(st, totp_box["totp"].fresh())
        res2 = b.walk(r, login=False)
        res2.hops = res.hops + res2.hops
        res = res2
    elif expect_code:
        raise AssertionError(f"no second step though one was expected:\n{res.trace()}")
    assert res.code, f"no code:\n{res.trace()}"
    assert res.params.get("state") == "st-1"
    tokens = token_json(b.oidc.redeem(client, res.code, verifier), "code redemption")
    claims = b.oidc.verify(tokens["id_token"], audience=client.client_id)
    assert claims.get("nonce") == "n-1"
    res.tokens = tokens
    return claims, res, st


def assert_amr(claims: dict, expected: set[str]) -> None:
    amr = claims.get("amr")
    assert isinstance(amr, list) and set(amr) == expected and len(amr) == len(expected), \
        f"amr {amr!r}, expected {sorted(expected)}"


def test_discovery_lists_the_refeds_mfa_acr(cas):
    d = Oidc(cas).discovery()
    assert REFEDS_MFA in d.get("acr_values_supported", []), d.get("acr_values_supported")


def test_oidc_password_only_says_pwd_and_sfa(cas):
    b = MfaOidcBrowser(cas)
    claims, _, _ = oidc_login(b, PLAIN_RP, "oidc-plain", expect_code=False)
    assert_amr(claims, {"pwd"})
    assert claims.get("acr") == REFEDS_SFA, claims


def test_oidc_acr_values_refeds_mfa_forces_the_second_factor(cas):
    b = MfaOidcBrowser(cas)
    box: dict = {}
    claims, _, st = oidc_login(b, PLAIN_RP, "oidc-acr", totp_box=box, acr_values=REFEDS_MFA)
    assert st.enrolment
    assert_amr(claims, {"pwd", "otp", "mfa"})
    assert claims.get("acr") == REFEDS_MFA, claims
    assert claims.get("sub") and claims.get("auth_time"), claims
    # the session has MFA now: prompt=none with acr_values is served without interaction
    claims, _, _ = oidc_login(b, PLAIN_RP, "oidc-acr", expect_password=False, expect_code=False,
                              acr_values=REFEDS_MFA, prompt="none")
    assert claims.get("acr") == REFEDS_MFA, claims
    assert "otp" in claims.get("amr", []), claims


def test_oidc_acr_values_mfa_short_name(cas):
    b = MfaOidcBrowser(cas)
    claims, _, _ = oidc_login(b, PLAIN_RP, "oidc-short", totp_box={}, acr_values="mfa")
    assert claims.get("acr") == "mfa", f"acr is not the satisfied acr_values entry: {claims}"
    assert_amr(claims, {"pwd", "otp", "mfa"})


def test_oidc_prompt_none_without_mfa_is_interaction_required(cas):
    b = MfaOidcBrowser(cas)
    oidc_login(b, PLAIN_RP, "oidc-none", expect_code=False)  # a password session
    verifier, _ = pkce_pair()
    res = b.authorize(PLAIN_RP, verifier=verifier, login=False, acr_values=REFEDS_MFA, prompt="none")
    assert res.location and res.location.startswith(PLAIN_RP.redirect_uri), res.trace()
    assert res.error == "interaction_required", f"{res.params}:\n{res.trace()}"
    assert res.params.get("state") == "st-1"
    assert res.code is None


def test_oidc_client_with_mfa_required(cas):
    b = MfaOidcBrowser(cas)
    box: dict = {}
    claims, _, st = oidc_login(b, MFA_RP, "oidc-client", totp_box=box)
    assert st.enrolment
    assert_amr(claims, {"pwd", "otp", "mfa"})
    assert claims.get("acr") == REFEDS_MFA, claims


def test_oidc_step_up_asks_only_for_the_code(cas):
    box = {"totp": enrol(cas, "oidc-step")}
    b = MfaOidcBrowser(cas)
    claims, _, _ = oidc_login(b, PLAIN_RP, "oidc-step", expect_code=False)
    assert_amr(claims, {"pwd"})
    claims, _, st = oidc_login(b, MFA_RP, "oidc-step", totp_box=box, expect_password=False)
    assert not st.enrolment
    assert_amr(claims, {"pwd", "otp", "mfa"})
    assert claims.get("acr") == REFEDS_MFA, claims


def test_oidc_tokens_outlive_a_step_up_of_their_session(cas):
    """The step-up adds the factor to the same session: a client signed in
    before keeps its refresh token and sid."""
    box = {"totp": enrol(cas, "oidc-keep")}
    b = MfaOidcBrowser(cas)
    before, res, _ = oidc_login(b, PLAIN_RP, "oidc-keep", expect_code=False)
    refresh = res.tokens.get("refresh_token")
    assert refresh, res.tokens
    after, _, st = oidc_login(b, MFA_RP, "oidc-keep", totp_box=box, expect_password=False)
    assert not st.enrolment
    assert after.get("sid") == before.get("sid"), (before, after)
    fresh = token_json(b.oidc.refresh(PLAIN_RP, refresh), "refresh after the step-up")
    assert fresh.get("access_token"), fresh


def test_oidc_prompt_login_asks_for_both_again(cas):
    b = MfaOidcBrowser(cas)
    box: dict = {}
    first, _, _ = oidc_login(b, MFA_RP, "oidc-login", totp_box=box)
    time.sleep(1.1)  # auth_time has a resolution of a second
    claims, _, st = oidc_login(b, MFA_RP, "oidc-login", totp_box=box, prompt="login")
    assert not st.enrolment
    assert_amr(claims, {"pwd", "otp", "mfa"})
    assert claims["auth_time"] > first["auth_time"], (first["auth_time"], claims["auth_time"])
