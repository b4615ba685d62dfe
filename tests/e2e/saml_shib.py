"""The Shibboleth Service Provider (Debian's libapache2-mod-shib +
shibboleth-sp-utils) as a SAML 2.0 relying party of Castellan's IdP.

`ShibbolethSp` runs, per instance, in its own temp dir:

* its own `shibd` (`shibd -f -F -c <dir>/shibboleth/shibboleth2.xml -p <pid>
  -w 30`, in the foreground, as root) with its own configuration
  directory: shibboleth2.xml, attribute-map.xml, security-policy.xml and
  protocols.xml (copies of Debian's), the error/logout templates, loggers
  writing to <dir>/logs, the IdP metadata file fetched from Castellan's
  /cas/idp/metadata, and the SP's RSA key and self-signed certificate made
  here.  Its listener is a Unix socket in <dir>/run (not the system shibd's
  /run/shibboleth/shibd.sock), sessions are kept in shibd's memory;
* its own Apache httpd (own ServerRoot, prefork, children as www-data) that
  loads /usr/lib/apache2/modules/mod_shib.so with `ShibConfig` (and
  SHIBSP_CONFIG) pointing at the same shibboleth2.xml.

On http://127.0.0.1:<port>/ it serves:

  /Shibboleth.sso/...   the SP's handler: Login, Logout, SAML2/POST (the ACS),
                        SLO/Redirect, SLO/POST, SLO/SOAP, Session, Status, Metadata
  /secure/env.cgi       AuthType shibboleth, requireSession 1, Require
                        shib-session; prints REMOTE_USER and the CGI environment
                        (Apache turns '-' in variable names into '_', so the
                        attributes show up as mail, cn, memberOf, persistent_id,
                        Shib_Identity_Provider, Shib_Session_Index, ...)
  /loggedout.html       a plain page for the `return` of /Shibboleth.sso/Logout

The SP's entityID is http://127.0.0.1:<port>/shibboleth; the SP metadata
Castellan is given (`service()`, `protocol = "saml"`) is written here (not
taken from Shibboleth's MetadataGenerator): ACS HTTP-POST
/Shibboleth.sso/SAML2/POST index 1, SingleLogoutService SOAP, HTTP-Redirect
and HTTP-POST (`slo_bindings`), one certificate for use="signing" and
use="encryption".
REMOTE_USER is by default the persistent NameID as Shibboleth formats it
(IdP-entityID!SP-entityID!value), falling back to mail; the attribute map
also knows transient and emailAddress NameIDs (transient-id, nameid-email)
and `weird` with NameFormat basic.  Everything is plain
http on loopback (handlerSSL="false", cookieProps="http").

Shibboleth signs its LogoutRequests by default (the SAML2 LogoutInitiator's
default signing is "true"); AuthnRequests are signed only with
`sign_requests=True` (signing="true", and AuthnRequestsSigned="true" in the
SP metadata so that Castellan must refuse unsigned ones).  With no
<alg:SigningMethod> in the IdP metadata its HTTP-Redirect signatures are
RSA-SHA1 (SigAlg .../xmldsig#rsa-sha1): what a stock Shibboleth SP sends.
"""

from __future__ import annotations

import base64
import datetime
import os
import shutil
import signal
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import requests
from lxml import etree

from conftest import (
    APACHE_BIN,
    APACHE_MODULES,
    PASSWORD,
    _LIVE,
    Castellan,
    _tail,
    free_port,
    parse_login_form,
    toml_table,
)

SHIBD_BIN = Path("/usr/sbin/shibd")
MOD_SHIB = APACHE_MODULES / "mod_shib.so"
SHIB_ETC = Path("/etc/shibboleth")  # Debian's defaults: protocols.xml, security-policy.xml, templates

DEB_PACKAGES = ("apache2", "libapache2-mod-shib", "shibboleth-sp-utils")

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
NSS = {"samlp": SAMLP, "saml": SAML, "md": MD, "ds": DS, "xenc": XENC}

BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BINDING_SOAP = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP"
NAMEID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
NAMEID_TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
STATUS_NO_PASSIVE = "urn:oasis:names:tc:SAML:2.0:status:NoPassive"
AC_PPT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"

OID_MAIL = "urn:oid:0.9.2342.19200300.100.1.3"
OID_CN = "urn:oid:2.5.4.3"
OID_MEMBER_OF = "urn:oid:1.3.6.1.4.1.5923.1.5.1.1"
RELEASED_OIDS = {OID_MAIL: "mail", OID_CN: "cn", OID_MEMBER_OF: "memberOf"}


def shibboleth_available() -> str | None:
    """None when Apache, mod_shib and shibd are installed, else why not."""
    if not APACHE_BIN.exists():
        return f"{APACHE_BIN} missing (apt-get install apache2)"
    if not MOD_SHIB.exists():
        return f"{MOD_SHIB} missing (apt-get install libapache2-mod-shib)"
    if not SHIBD_BIN.exists():
        return f"{SHIBD_BIN} missing (apt-get install shibboleth-sp-utils)"
    for f in ("protocols.xml", "security-policy.xml", "sessionError.html"):
        if not (SHIB_ETC / f).exists():
            return f"{SHIB_ETC / f} missing (apt-get install shibboleth-sp-common)"
    return None


# --------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------


def make_rsa_credential(key_path: Path, cert_path: Path, cn: str, days: int = 30) -> str:
    """An RSA-2048 key (PKCS#8 PEM) and a self-signed certificate; returns the
    certificate's base64 DER (for ds:X509Certificate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def dummy_idp_metadata(entity_id: str, base: str, cert_b64: str) -> str:
    """IdP metadata of the shape Castellan's /cas/idp/metadata has (to check the SP config without a server)."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="{MD}" xmlns:ds="{DS}" entityID="{escape(entity_id)}">
  <md:IDPSSODescriptor protocolSupportEnumeration="{SAMLP}">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleLogoutService Binding="{BINDING_REDIRECT}" Location="{base}/profile/SAML2/Redirect/SLO"/>
    <md:SingleLogoutService Binding="{BINDING_POST}" Location="{base}/profile/SAML2/POST/SLO"/>
    <md:NameIDFormat>{NAMEID_PERSISTENT}</md:NameIDFormat>
    <md:SingleSignOnService Binding="{BINDING_REDIRECT}" Location="{base}/profile/SAML2/Redirect/SSO"/>
    <md:SingleSignOnService Binding="{BINDING_POST}" Location="{base}/profile/SAML2/POST/SSO"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>
"""


class SamlCastellan(Castellan):
    """conftest.Castellan with a [saml] table (`saml=`), for as long as conftest has none of its own."""

    def __init__(self, workdir: Path, *, saml: dict | None = None, **kw) -> None:
        super().__init__(workdir, **kw)
        if saml is not None:
            self.saml = saml

    def config_text(self) -> str:
        text = super().config_text()
        saml = getattr(self, "saml", None)
        if saml and "\n[saml]\n" not in "\n" + text:
            text += toml_table("saml", saml)
        return text


# --------------------------------------------------------------------------
# configuration files
# --------------------------------------------------------------------------

ENV_CGI = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "REMOTE_USER=$REMOTE_USER"
echo "AUTH_TYPE=$AUTH_TYPE"
env | grep -v -E '^(REMOTE_USER|AUTH_TYPE)=' | sort
"""

ATTRIBUTE_MAP = f"""<Attributes xmlns="urn:mace:shibboleth:2.0:attribute-map"
            xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
    <!-- NameFormat uri (the default of Attribute/@nameFormat here) -->
    <Attribute name="{OID_MAIL}" id="mail"/>
    <Attribute name="{OID_CN}" id="cn"/>
    <Attribute name="{OID_MEMBER_OF}" id="memberOf"/>
    <!-- a name without an OID goes out with NameFormat basic -->
    <Attribute name="weird" nameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic" id="weird"/>
    <!-- NameIDs -->
    <Attribute name="{NAMEID_PERSISTENT}" id="persistent-id">
        <AttributeDecoder xsi:type="NameIDAttributeDecoder" formatter="$NameQualifier!$SPNameQualifier!$Name"
                          defaultQualifiers="true"/>
    </Attribute>
    <Attribute name="{NAMEID_TRANSIENT}" id="transient-id">
        <AttributeDecoder xsi:type="NameIDAttributeDecoder" formatter="$Name"/>
    </Attribute>
    <Attribute name="{NAMEID_EMAIL}" id="nameid-email">
        <AttributeDecoder xsi:type="NameIDAttributeDecoder" formatter="$Name"/>
    </Attribute>
</Attributes>
"""

SHIBD_LOGGER = """log4j.rootCategory=INFO, shibd_log
log4j.category.XMLTooling.XMLObject=INFO
log4j.category.XMLTooling.XMLObjectBuilder=INFO
log4j.category.XMLTooling.KeyInfoResolver=INFO
log4j.category.Shibboleth.IPRange=INFO
log4j.category.Shibboleth.PropertySet=INFO
log4j.category.XMLTooling.libcurl=INFO
# what the tests need when something fails: messages, policy rules, decryption, SSO/SLO handlers
log4j.category.OpenSAML.MessageDecoder=DEBUG
log4j.category.OpenSAML.MessageEncoder=DEBUG
log4j.category.OpenSAML.SecurityPolicyRule=DEBUG
log4j.category.OpenSAML.SecurityPolicy=DEBUG
log4j.category.XMLTooling.Decrypter=DEBUG
log4j.category.XMLTooling.SOAPClient=DEBUG
log4j.category.Shibboleth.SSO=DEBUG
log4j.category.Shibboleth.Logout=DEBUG
log4j.category.Shibboleth.SessionCache=DEBUG
log4j.category.Shibboleth.AttributeExtractor=DEBUG
log4j.category.Shibboleth.MetadataProvider=DEBUG
log4j.category.OpenSAML.MetadataProvider=DEBUG

log4j.category.XMLTooling.Signature.Debugger=INFO, sig_log
log4j.additivity.XMLTooling.Signature.Debugger=false
log4j.ownAppenders.XMLTooling.Signature.Debugger=true

log4j.category.Shibboleth-TRANSACTION=INFO, tran_log
log4j.additivity.Shibboleth-TRANSACTION=false
log4j.ownAppenders.Shibboleth-TRANSACTION=true

log4j.appender.shibd_log=org.apache.log4j.FileAppender
log4j.appender.shibd_log.fileName={logs}/shibd.log
log4j.appender.shibd_log.layout=org.apache.log4j.PatternLayout
log4j.appender.shibd_log.layout.ConversionPattern=%d{{%Y-%m-%d %H:%M:%S}} %p %c %x: %m%n

log4j.appender.tran_log=org.apache.log4j.FileAppender
log4j.appender.tran_log.fileName={logs}/transaction.log
log4j.appender.tran_log.layout=org.apache.log4j.PatternLayout
log4j.appender.tran_log.layout.ConversionPattern=%d{{%Y-%m-%d %H:%M:%S}}|%c|%m%n

log4j.appender.sig_log=org.apache.log4j.FileAppender
log4j.appender.sig_log.fileName={logs}/signature.log
log4j.appender.sig_log.layout=org.apache.log4j.PatternLayout
log4j.appender.sig_log.layout.ConversionPattern=%m
"""

NATIVE_LOGGER = """log4j.rootCategory=INFO, native_log
log4j.category.XMLTooling.XMLObject=WARN
log4j.category.XMLTooling.XMLObjectBuilder=WARN
log4j.category.XMLTooling.KeyInfoResolver=WARN
log4j.category.Shibboleth.IPRange=WARN
log4j.category.Shibboleth.PropertySet=WARN
log4j.appender.native_log=org.apache.log4j.FileAppender
log4j.appender.native_log.fileName={logs}/native.log
log4j.appender.native_log.layout=org.apache.log4j.PatternLayout
log4j.appender.native_log.layout.ConversionPattern=%d{{%Y-%m-%d %H:%M:%S}} %p %c %x: %m%n
"""

TEMPLATES = ("sessionError.html", "metadataError.html", "accessError.html", "sslError.html", "localLogout.html",
             "globalLogout.html", "partialLogout.html", "postTemplate.html", "bindingTemplate.html",
             "discoveryTemplate.html", "attrChecker.html")


@dataclass
class _LogView:
    """What conftest's failure report reads for each live process (label, log_path)."""

    label: str
    log_path: Path


class ShibbolethSp:
    """An Apache httpd + mod_shib + shibd of our own as a SAML SP of Castellan (see the module doc).

    Made before Castellan starts (the key pair and the SP metadata exist from
    __init__ on, so `service()` can go into Castellan's config); `start(cas)`
    then fetches the IdP metadata and starts shibd and Apache."""

    def __init__(self, *, port: int | None = None, name: str = "shib-sp", sign_requests: bool = False,
                 want_assertions_signed: bool = True, name_id_format: str = NAMEID_PERSISTENT,
                 remote_user: str = "persistent-id mail", metadata_signer: Path | None = None,
                 slo_bindings: tuple[str, ...] = ("SOAP", "Redirect", "POST"),
                 label: str | None = None) -> None:
        self.port = port or free_port()
        self.name = name
        self.sign_requests = sign_requests
        self.want_assertions_signed = want_assertions_signed
        self.name_id_format = name_id_format
        # a certificate: shibd's MetadataProvider then has a Signature filter with it (the IdP
        # metadata must be signed by its key, or shibd refuses it)
        self.metadata_signer = metadata_signer
        self.slo_bindings = slo_bindings  # the SingleLogoutService endpoints in the SP metadata
        self.remote_user = remote_user
        self.root = Path(tempfile.mkdtemp(prefix="castellan-e2e-shib-"))
        self.base = f"http://127.0.0.1:{self.port}"
        self.entity_id = self.base + "/shibboleth"
        self.handler = self.base + "/Shibboleth.sso"
        self.acs_url = self.handler + "/SAML2/POST"
        self.slo_soap = self.handler + "/SLO/SOAP"
        self.slo_redirect = self.handler + "/SLO/Redirect"
        self.slo_post = self.handler + "/SLO/POST"
        self.protected = self.base + "/secure/env.cgi"
        self.logged_out_url = self.base + "/loggedout.html"
        self.shib_dir = self.root / "shibboleth"
        self.config_path = self.shib_dir / "shibboleth2.xml"
        self.metadata_path = self.shib_dir / "sp-metadata.xml"
        self.idp_metadata_path = self.shib_dir / "idp-metadata.xml"
        self.key_path = self.shib_dir / "sp-key.pem"
        self.cert_path = self.shib_dir / "sp-cert.pem"
        self.socket_path = self.root / "run" / "shibd.sock"
        self.pid_path = self.root / "run" / "shibd.pid"
        self.logs = self.root / "logs"
        self.shibd_log = self.logs / "shibd.log"
        self.log_path = self.logs / "error.log"  # Apache's
        self.label = f"{label or name} (port {self.port}, {self.root})"
        self.idp_entity_id: str | None = None
        self.shibd: subprocess.Popen | None = None
        self.proc: subprocess.Popen | None = None  # Apache
        self._views = [_LogView(f"shibd of {self.label}", self.shibd_log),
                       _LogView(f"apache of {self.label}", self.log_path),
                       _LogView(f"mod_shib of {self.label}", self.logs / "native.log")]
        self._prepare()

    # -- files ----------------------------------------------------------------
    def _prepare(self) -> None:
        r = self.root
        os.chmod(r, 0o755)
        for d in ("shibboleth", "run", "cache", "logs", "htdocs/secure"):
            (r / d).mkdir(parents=True, exist_ok=True)
            os.chmod(r / d, 0o755)
        self.cert_b64 = make_rsa_credential(self.key_path, self.cert_path, f"{self.name} 127.0.0.1:{self.port}")
        self.metadata_path.write_text(self.sp_metadata())
        os.chmod(self.metadata_path, 0o644)

    def sp_metadata(self) -> str:
        slo_eps = {"SOAP": (BINDING_SOAP, self.slo_soap), "Redirect": (BINDING_REDIRECT, self.slo_redirect),
                   "POST": (BINDING_POST, self.slo_post)}
        slo = "\n".join(f'    <md:SingleLogoutService Binding="{slo_eps[b][0]}" Location="{slo_eps[b][1]}"/>'
                        for b in self.slo_bindings)
        kd = (f'<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{self.cert_b64}'
              f'</ds:X509Certificate></ds:X509Data></ds:KeyInfo>')
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="{MD}" xmlns:ds="{DS}" entityID="{self.entity_id}">
  <md:SPSSODescriptor protocolSupportEnumeration="{SAMLP}"
      AuthnRequestsSigned="{'true' if self.sign_requests else 'false'}"
      WantAssertionsSigned="{'true' if self.want_assertions_signed else 'false'}">
    <md:KeyDescriptor use="signing">{kd}</md:KeyDescriptor>
    <md:KeyDescriptor use="encryption">{kd}</md:KeyDescriptor>
{slo}
    <md:NameIDFormat>{self.name_id_format}</md:NameIDFormat>
    <md:AssertionConsumerService Binding="{BINDING_POST}" Location="{self.acs_url}" index="1" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"""

    def service(self, **extra) -> dict:
        """The Castellan [[services]] entry registering this SP (extra keys added / overriding)."""
        svc = {
            "name": self.name,
            "protocol": "saml",
            "metadata": str(self.metadata_path),
            "release": ["mail", "cn", "memberOf"],
            "name_id_format": self.name_id_format,
        }
        svc.update(extra)
        return {k: v for k, v in svc.items() if v is not None}

    def shibboleth2_xml(self) -> str:
        d, r = self.shib_dir, self.root
        signing = ' signing="true"' if self.sign_requests else ""
        md_filter = ""
        if self.metadata_signer is not None:
            md_filter = (f'\n            <MetadataFilter type="Signature" certificate="{d}/idp-metadata-signer.pem"'
                         f' verifyBackup="false"/>\n        ')
        return f"""<SPConfig xmlns="urn:mace:shibboleth:3.0:native:sp:config"
    xmlns:conf="urn:mace:shibboleth:3.0:native:sp:config"
    clockSkew="180">
    <!-- generated by tests/e2e/saml_shib.py -->
    <OutOfProcess logger="{d}/shibd.logger"
        tranLogFormat="%u|%s|%IDP|%i|%ac|%t|%attr|%n|%b|%E|%S|%SS|%L|%UA|%a"/>
    <InProcess logger="{d}/native.logger"/>
    <UnixListener address="{self.socket_path}"/>

    <StorageService type="Memory" id="mem" cleanupInterval="900"/>
    <SessionCache type="StorageService" StorageService="mem" cacheAssertions="false"
                  cacheAllowance="900" inprocTimeout="900" cleanupInterval="900"/>
    <ReplayCache StorageService="mem"/>
    <ArtifactMap artifactTTL="180"/>

    <ApplicationDefaults entityID="{self.entity_id}" REMOTE_USER="{self.remote_user}"{signing}>
        <Sessions lifetime="28800" timeout="3600" relayState="ss:mem"
                  checkAddress="false" handlerSSL="false" cookieProps="http"
                  redirectLimit="exact">
            <SSO entityID="{self.idp_entity_id}">SAML2</SSO>
            <Logout>SAML2 Local</Logout>
            <Handler type="MetadataGenerator" Location="/Metadata" signing="false"/>
            <Handler type="Status" Location="/Status" acl="127.0.0.1 ::1"/>
            <Handler type="Session" Location="/Session" showAttributeValues="true"/>
        </Sessions>

        <Errors supportContact="root@localhost" helpLocation="/about.html" styleSheet="/shibboleth-sp/main.css"
                session="{d}/sessionError.html" metadata="{d}/metadataError.html" access="{d}/accessError.html"
                ssl="{d}/sslError.html" localLogout="{d}/localLogout.html" globalLogout="{d}/globalLogout.html"
                partialLogout="{d}/partialLogout.html"/>

        <MetadataProvider type="XML" validate="true" path="{self.idp_metadata_path}">{md_filter}</MetadataProvider>
        <AttributeExtractor type="XML" validate="true" reloadChanges="false" path="{d}/attribute-map.xml"/>
        <CredentialResolver type="File" key="{self.key_path}" certificate="{self.cert_path}"/>
    </ApplicationDefaults>

    <SecurityPolicyProvider type="XML" validate="true" path="{d}/security-policy.xml"/>
    <ProtocolProvider type="XML" validate="true" reloadChanges="false" path="{d}/protocols.xml"/>
</SPConfig>
"""

    def apache_conf(self) -> str:
        r = self.root
        mods = ["mpm_prefork", "authn_core", "authz_core", "authz_user", "cgi", "mime", "dir"]
        load = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in mods)
        return f"""# generated by tests/e2e/saml_shib.py
ServerRoot "{r}"
ServerName 127.0.0.1:{self.port}
UseCanonicalName On
Listen 127.0.0.1:{self.port}
PidFile "{r}/run/httpd.pid"
DefaultRuntimeDir "{r}/run"
Mutex file:{r}/run default
ErrorLog "{self.log_path}"
LogLevel warn
LogFormat "%h %l %u %t \\"%r\\" %>s %b" common
CustomLog "{r}/logs/access.log" common
User www-data
Group www-data
{load}
LoadModule mod_shib {MOD_SHIB}
StartServers 3
MinSpareServers 2
MaxSpareServers 6
MaxRequestWorkers 16
Timeout 30
TypesConfig /dev/null
AddType text/html .html

ShibConfig {self.config_path}
ShibCompatValidUser Off

DocumentRoot "{r}/htdocs"
<Directory "{r}/htdocs">
    Require all granted
</Directory>
<Location /Shibboleth.sso>
    SetHandler shib
    AuthType None
    Require all granted
</Location>
<Location /secure>
    AuthType shibboleth
    ShibRequestSetting requireSession 1
    Require shib-session
</Location>
<Directory "{r}/htdocs/secure">
    Options +ExecCGI
    <Files "env.cgi">
        SetHandler cgi-script
    </Files>
</Directory>
"""

    def _env(self) -> dict:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C",
            "SHIBSP_CONFIG": str(self.config_path),
            # the SP resolves relative file names against <CFGDIR>/shibboleth (likewise RUNDIR, ...)
            "SHIBSP_CFGDIR": str(self.root),
            "SHIBSP_RUNDIR": str(self.root / "run"),
            "SHIBSP_CACHEDIR": str(self.root / "cache"),
            "SHIBSP_LOGDIR": str(self.logs),
        }

    def write_config(self, idp_metadata: str | bytes, idp_entity_id: str) -> None:
        d = self.shib_dir
        self.idp_entity_id = idp_entity_id
        data = idp_metadata.encode() if isinstance(idp_metadata, str) else idp_metadata
        self.idp_metadata_path.write_bytes(data)
        for name in ("protocols.xml", "security-policy.xml") + TEMPLATES:
            src = SHIB_ETC / name
            if src.exists():
                shutil.copy(src, d / name)
        (d / "attribute-map.xml").write_text(ATTRIBUTE_MAP)
        (d / "shibd.logger").write_text(SHIBD_LOGGER.format(logs=self.logs))
        (d / "native.logger").write_text(NATIVE_LOGGER.format(logs=self.logs))
        if self.metadata_signer is not None:
            shutil.copy(self.metadata_signer, d / "idp-metadata-signer.pem")
        self.config_path.write_text(self.shibboleth2_xml())
        for f in d.iterdir():
            if f != self.key_path:
                os.chmod(f, 0o644)
        # mod_shib runs in the Apache children (www-data) and logs there
        native = self.logs / "native.log"
        native.touch()
        shutil.chown(native, "www-data", "www-data")
        cgi = self.root / "htdocs/secure/env.cgi"
        cgi.write_text(ENV_CGI)
        os.chmod(cgi, 0o755)
        (self.root / "htdocs/index.html").write_text("apache up\n")
        (self.root / "htdocs/loggedout.html").write_text(
            "<html><body><p>logged out of the shibboleth sp</p></body></html>\n")
        (self.root / "httpd.conf").write_text(self.apache_conf())

    # -- checks -----------------------------------------------------------------
    def shibd_config_test(self) -> subprocess.CompletedProcess:
        return subprocess.run([str(SHIBD_BIN), "-t", "-c", str(self.config_path)], capture_output=True,
                              text=True, env=self._env(), timeout=60)

    def apache_config_test(self) -> subprocess.CompletedProcess:
        conf = self.root / "httpd.conf"
        return subprocess.run([str(APACHE_BIN), "-d", str(self.root), "-f", str(conf), "-t"], capture_output=True,
                              text=True, env=self._env(), timeout=60)

    # -- lifecycle --------------------------------------------------------------
    def start(self, cas, timeout: float = 30.0) -> "ShibbolethSp":
        """Fetch Castellan's IdP metadata and start shibd and Apache."""
        r = requests.get(cas.url("/idp/metadata"), timeout=15)
        if r.status_code != 200:
            raise RuntimeError(f"GET /cas/idp/metadata -> {r.status_code}: {r.text[:500]}")
        try:
            root = etree.fromstring(r.content)
        except etree.XMLSyntaxError as exc:
            raise RuntimeError(f"IdP metadata is no XML ({exc}): {r.text[:500]!r}") from None
        if root.tag != f"{{{MD}}}EntityDescriptor" or not root.get("entityID"):
            raise RuntimeError(f"IdP metadata root is {root.tag}, not md:EntityDescriptor with entityID")
        return self.start_with(r.content, root.get("entityID"), timeout)

    def start_with(self, idp_metadata: str | bytes, idp_entity_id: str, timeout: float = 30.0) -> "ShibbolethSp":
        self.write_config(idp_metadata, idp_entity_id)
        check = self.shibd_config_test()
        if check.returncode != 0:
            raise RuntimeError(f"shibd -t failed ({check.returncode}):\n{check.stdout}{check.stderr}\n"
                               f"{_tail(self.shibd_log, 60)}\n--- shibboleth2.xml ---\n{self.config_path.read_text()}")
        check = self.apache_config_test()
        if check.returncode != 0:
            raise RuntimeError(f"apache2 -t failed:\n{check.stdout}{check.stderr}")
        self._start_shibd(timeout)
        self._start_apache(timeout)
        return self

    def _start_shibd(self, timeout: float) -> None:
        out = open(self.logs / "shibd.stdout.log", "ab")
        self.shibd = subprocess.Popen(
            [str(SHIBD_BIN), "-f", "-F", "-c", str(self.config_path), "-p", str(self.pid_path), "-w", "30"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self._env(),
            start_new_session=True)
        out.close()
        for v in self._views[:1]:
            _LIVE.append(v)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.shibd.poll() is not None:
                self.stop()
                raise RuntimeError(f"shibd exited with {self.shibd.returncode}:\n{self.log_tail()}")
            if self.socket_path.exists() and "listener service starting" in _tail(self.shibd_log, 400):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"shibd did not come up in {timeout}s:\n{self.log_tail()}")

    def _start_apache(self, timeout: float) -> None:
        conf = self.root / "httpd.conf"
        out = open(self.logs / "stdout.log", "ab")
        self.proc = subprocess.Popen([str(APACHE_BIN), "-d", str(self.root), "-f", str(conf), "-DFOREGROUND"],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=self._env(), start_new_session=True)
        out.close()
        for v in self._views[1:]:
            _LIVE.append(v)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"apache exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                # the Status handler goes through mod_shib to shibd: both are up when it answers
                s = requests.get(self.handler + "/Status", timeout=2)
                last = f"{s.status_code} {s.text[:300]!r}"
                if s.status_code == 200 and "<OK" in s.text:
                    return
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"apache+mod_shib did not come up ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        for v in self._views:
            if v in _LIVE:
                _LIVE.remove(v)
        for p in (self.proc, self.shibd):
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)  # Apache's parent stops its children
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def cleanup(self) -> None:
        self.stop()
        if not os.environ.get("KEEP_E2E_TMP"):
            shutil.rmtree(self.root, ignore_errors=True)

    def alive(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self.proc, self.shibd))

    # -- logs -------------------------------------------------------------------
    def log_tail(self, lines: int = 80) -> str:
        return ("--- shibd.log ---\n" + _tail(self.shibd_log, lines)
                + "\n--- shibd stdout ---\n" + _tail(self.logs / "shibd.stdout.log", 20)
                + "\n--- mod_shib (native.log) ---\n" + _tail(self.logs / "native.log", 30)
                + "\n--- apache error.log ---\n" + _tail(self.log_path, 30)
                + "\n--- apache access.log ---\n" + _tail(self.logs / "access.log", 20)
                + "\n--- apache stdout ---\n" + _tail(self.logs / "stdout.log", 20))

    def log_mark(self) -> dict[str, int]:
        """Current sizes of the logs (for log_since)."""
        out = {}
        for name in ("shibd.log", "transaction.log", "native.log"):
            try:
                out[name] = (self.logs / name).stat().st_size
            except OSError:
                out[name] = 0
        return out

    def log_since(self, mark: dict[str, int], name: str = "shibd.log") -> str:
        return _tail(self.logs / name, 100000, since=mark.get(name, 0))


# --------------------------------------------------------------------------
# messages and pages
# --------------------------------------------------------------------------


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._cur: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._cur = {"attrs": a, "inputs": {}, "types": {}}
            self.forms.append(self._cur)
        elif tag in ("input", "button") and self._cur is not None:
            if a.get("name"):
                self._cur["inputs"][a["name"]] = a.get("value", "")
            self._cur["types"].setdefault(a.get("type", "submit" if tag == "button" else "text").lower(), 0)
            self._cur["types"][a.get("type", "submit" if tag == "button" else "text").lower()] += 1

    def handle_endtag(self, tag):
        if tag == "form":
            self._cur = None


@dataclass
class PostForm:
    """An HTTP-POST binding page: <form method="post" action=...> with SAMLResponse/SAMLRequest and RelayState."""

    action: str
    method: str
    fields: dict[str, str]
    has_submit: bool
    page: requests.Response

    @property
    def message_field(self) -> str:
        return "SAMLResponse" if "SAMLResponse" in self.fields else "SAMLRequest"

    @property
    def xml(self) -> bytes:
        # base64 as in MIME: line breaks allowed (Shibboleth's own forms wrap at 60 columns)
        return base64.b64decode("".join(self.fields[self.message_field].split()), validate=True)

    @property
    def doc(self):
        return parse_saml(self.xml)

    @property
    def relay_state(self) -> str | None:
        return self.fields.get("RelayState")


def saml_post_form(resp: requests.Response) -> PostForm | None:
    """The first form of the page holding a SAMLResponse or SAMLRequest field, or None."""
    if "<form" not in resp.text.lower():
        return None
    p = _Forms()
    p.feed(resp.text)
    for f in p.forms:
        if "SAMLResponse" in f["inputs"] or "SAMLRequest" in f["inputs"]:
            return PostForm(action=urljoin(resp.url, f["attrs"].get("action", "")),
                            method=(f["attrs"].get("method") or "get").lower(), fields=dict(f["inputs"]),
                            has_submit=f["types"].get("submit", 0) > 0, page=resp)
    return None


def parse_saml(data: bytes):
    """Parse a SAML message (no DTDs, no entities, no network)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    return etree.fromstring(data, parser)


@dataclass
class RedirectMessage:
    """A SAML message in an HTTP-Redirect binding URL."""

    url: str
    endpoint: str  # the URL without query
    params: dict[str, str]
    xml: bytes

    @property
    def doc(self):
        return parse_saml(self.xml)

    @property
    def relay_state(self) -> str | None:
        return self.params.get("RelayState")

    @property
    def signed(self) -> bool:
        return bool(self.params.get("Signature") and self.params.get("SigAlg"))


def redirect_message(url: str) -> RedirectMessage | None:
    """Decode the SAMLRequest / SAMLResponse of an HTTP-Redirect binding URL (SAML bindings §3.4.4.1), or None."""
    u = urlparse(url)
    q = {k: v[0] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
    raw = q.get("SAMLRequest") or q.get("SAMLResponse")
    if not raw:
        return None
    xml = zlib.decompress(base64.b64decode(raw), -15)
    return RedirectMessage(url, url.split("?", 1)[0], q, xml)


def status_codes(doc) -> list[str]:
    """Top-level and nested StatusCode values of a StatusResponse."""
    out = []
    sc = doc.find("samlp:Status/samlp:StatusCode", NSS)
    while sc is not None:
        out.append(sc.get("Value"))
        sc = sc.find("samlp:StatusCode", NSS)
    return out


def assertion_attributes(assertion) -> dict[str, dict]:
    """{Name: {"format": NameFormat, "friendly": FriendlyName, "values": [...]}} of an Assertion."""
    out = {}
    for a in assertion.findall("saml:AttributeStatement/saml:Attribute", NSS):
        out[a.get("Name")] = {"format": a.get("NameFormat"), "friendly": a.get("FriendlyName"),
                             "values": [v.text or "" for v in a.findall("saml:AttributeValue", NSS)]}
    return out


def parse_env_page(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, v)
    return out


def instant(s: str) -> datetime.datetime:
    """An xs:dateTime in UTC (SAML core §1.3.3: no time zone offsets other than Z)."""
    assert s and s.endswith("Z"), f"SAML time {s!r} is not UTC with Z"
    s = s[:-1]
    if "." in s:
        head, frac = s.split(".", 1)
        s = f"{head}.{(frac + '000000')[:6]}"
        fmt = "%Y-%m-%dT%H:%M:%S.%f"
    else:
        fmt = "%Y-%m-%dT%H:%M:%S"
    return datetime.datetime.strptime(s, fmt).replace(tzinfo=datetime.timezone.utc)


# --------------------------------------------------------------------------
# the scripted browser
# --------------------------------------------------------------------------


@dataclass
class Walk:
    """Where a walk through SP, IdP and CAS ended (see ShibBrowser.walk)."""

    hops: list = field(default_factory=list)  # every response, in order
    forms_seen: int = 0  # login forms shown (and submitted, if allowed)
    authn_requests: list = field(default_factory=list)  # RedirectMessage / PostForm of AuthnRequests seen
    final: requests.Response | None = None
    post: PostForm | None = None  # the SAMLResponse form, when the walk stopped at one

    def trace(self) -> str:
        out = []
        for r in self.hops:
            loc = r.headers.get("Location")
            out.append(f"{r.request.method} {r.url} -> {r.status_code}" + (f" Location: {loc}" if loc else ""))
        if self.final is not None and self.final.status_code != 302:
            out.append(f"final body: {self.final.text[:800]!r}")
        return "\n".join(out)


class ShibBrowser:
    """A requests.Session walking SP -> Castellan -> CAS login form -> Castellan
    -> the SAMLResponse form, hop by hop (no automatic redirects)."""

    def __init__(self, session: requests.Session | None = None) -> None:
        self.s = session or requests.Session()

    def get(self, url: str, **params) -> requests.Response:
        return self.s.get(url, params=params or None, allow_redirects=False, timeout=30)

    def walk(self, r: requests.Response, *, login: bool = True, username: str = "casuser",
             password: str = PASSWORD, max_hops: int = 20) -> Walk:
        """Follow redirects (anywhere), submit the CAS login form when one shows up
        (once, if `login`), POST an SP's AuthnRequest form (HTTP-POST binding) on, and
        stop at the first page with a SAMLResponse form (not submitted: see post()),
        a second login form, or anything else."""
        w = Walk(hops=[r])
        for _ in range(max_hops):
            if r.status_code in (301, 302, 303, 307, 308) and r.headers.get("Location"):
                loc = urljoin(r.url, r.headers["Location"])
                msg = redirect_message(loc)
                if msg is not None and msg.doc.tag == f"{{{SAMLP}}}AuthnRequest":
                    w.authn_requests.append(msg)
                r = self.s.get(loc, allow_redirects=False, timeout=30)
            elif r.status_code == 200 and parse_login_form(r) is not None:
                w.forms_seen += 1
                if not login or w.forms_seen > 1:
                    break
                form = parse_login_form(r)
                data = dict(form.fields, username=username, password=password)
                r = self.s.post(form.action, data=data, allow_redirects=False, timeout=30)
            elif r.status_code == 200 and (pf := saml_post_form(r)) is not None:
                if pf.message_field == "SAMLRequest":
                    w.authn_requests.append(pf)
                    r = self.s.post(pf.action, data=pf.fields, allow_redirects=False, timeout=30)
                else:
                    w.post = pf
                    break
            else:
                break
            w.hops.append(r)
        w.final = r
        return w

    def post(self, form: PostForm, **override) -> requests.Response:
        """Submit an HTTP-POST binding form the way the page's script would."""
        assert form.method == "post", f"the SAML form's method is {form.method!r}"
        data = dict(form.fields)
        data.update(override)
        data = {k: v for k, v in data.items() if v is not None}
        return self.s.post(form.action, data=data, allow_redirects=False, timeout=30)

    def follow(self, r: requests.Response, max_hops: int = 10) -> tuple[requests.Response, list]:
        """Follow redirects (GET) and return (last response, hops)."""
        hops = [r]
        for _ in range(max_hops):
            if r.status_code in (301, 302, 303, 307, 308) and r.headers.get("Location"):
                r = self.s.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False, timeout=30)
                hops.append(r)
            else:
                break
        return r, hops

    def cookie(self, name_prefix: str) -> str | None:
        for c in self.s.cookies:
            if c.name.startswith(name_prefix) and c.value:
                return c.value
        return None
