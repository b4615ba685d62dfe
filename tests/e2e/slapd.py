"""A throwaway OpenLDAP server for the LDAP tests.

Debian's slapd, run in the foreground (`-d stats`, its log to a file) with
its own cn=config directory (built by slapadd from an LDIF), its own ports
(ldap:// with StartTLS, ldaps://), the memberof and ppolicy overlays, and
its own CA whose server certificate names only `localhost` (so that
`ldaps://127.0.0.1` is a wrong host name). The entries are added over LDAP
once it runs, so that the memberof overlay maintains `memberOf`.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PW = "admin-secret"
SERVICE_DN = f"cn=castellan,ou=services,{SUFFIX}"
SERVICE_PW = "service-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
PASSWORD = "Mellon-ldap"
MODULES = "/usr/lib/ldap"


def available() -> str | None:
    """Why the tests cannot run here, or None."""
    for tool in ("slapd", "slapadd", "ldapadd"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} not installed (Debian packages slapd, ldap-utils)"
    for m in ("back_mdb", "memberof", "ppolicy"):
        if not Path(f"{MODULES}/{m}.so").exists():
            return f"{MODULES}/{m}.so missing"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def make_tls(dirpath: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for DNS name `localhost` only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slapd test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = dirpath / "ca.pem", dirpath / "server.pem", dirpath / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


def config_ldif(d: Path, ca: Path, cert: Path, key: Path) -> str:
    schemas = "".join(f"include: file:///etc/ldap/schema/{s}.ldif\n\n"
                      for s in ("core", "cosine", "inetorgperson", "nis"))
    return f"""dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
olcTLSCACertificateFile: {ca}
olcTLSCertificateFile: {cert}
olcTLSCertificateKeyFile: {key}

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULES}
olcModuleLoad: back_mdb
olcModuleLoad: memberof
olcModuleLoad: ppolicy

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {SUFFIX}
olcRootDN: {ADMIN_DN}
olcRootPW: {ADMIN_PW}
olcDbDirectory: {d}/data
olcDbMaxSize: 33554432
olcAccess: {{0}}to attrs=userPassword by anonymous auth by self write by * none
olcAccess: {{1}}to * by * read

dn: olcOverlay={{0}}memberof,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {{0}}memberof
olcMemberOfRefInt: FALSE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf

dn: olcOverlay={{1}}ppolicy,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {{1}}ppolicy
olcPPolicyDefault: cn=default,ou=policies,{SUFFIX}
olcPPolicyUseLockout: TRUE
"""


def _person(uid: str, extra: str = "", password: str = PASSWORD) -> str:
    return f"""dn: uid={uid},{PEOPLE}
objectClass: inetOrgPerson
uid: {uid}
cn: {uid.capitalize()} Ldap
sn: Ldap
mail: {uid}@ldap.example.org
userPassword: {password}
{extra}
"""


def _policy(cn: str, lines: str) -> str:
    return f"""dn: cn={cn},ou=policies,{SUFFIX}
objectClass: organizationalRole
objectClass: pwdPolicy
cn: {cn}
pwdAttribute: userPassword
{lines}
"""


def data_ldif() -> str:
    """The directory: people, groups, a service account, policies.

    * casuser: in groups staff and faculty (memberOf from the overlay)
    * locked: pwdAccountLockedTime set (locked for good)
    * mustchange: pwdReset under a policy with pwdMustChange
    * expired / grace: under policies whose passwords live one second
      (expired has no grace logins, grace has three)
    * soon: under a policy that warns a month before a ten-day expiry
    """
    return "\n".join([
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        *(f"dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n"
          for ou in ("people", "groups", "services", "policies")),
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: castellan\nuserPassword: {SERVICE_PW}\n",
        _policy("default", "pwdLockout: TRUE\npwdMaxFailure: 0\n"),
        _policy("mustchange", "pwdMustChange: TRUE\npwdAllowUserChange: TRUE\n"),
        _policy("shortlived", "pwdMaxAge: 1\npwdGraceAuthNLimit: 0\n"),
        _policy("grace", "pwdMaxAge: 1\npwdGraceAuthNLimit: 3\n"),
        _policy("warned", "pwdMaxAge: 864000\npwdExpireWarning: 2592000\n"),
        _person("casuser"),
        _person("other"),
        _person("locked"),
        _person("mustchange", f"pwdPolicySubentry: cn=mustchange,ou=policies,{SUFFIX}"),
        _person("expired", f"pwdPolicySubentry: cn=shortlived,ou=policies,{SUFFIX}"),
        _person("grace", f"pwdPolicySubentry: cn=grace,ou=policies,{SUFFIX}"),
        _person("soon", f"pwdPolicySubentry: cn=warned,ou=policies,{SUFFIX}"),
        # A name that needs escaping in a DN (direct bind template).
        f"dn: uid=doe\\, john,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: doe, john\ncn: John Doe\nsn: Doe\n"
        f"mail: jdoe@ldap.example.org\nuserPassword: {PASSWORD}\n",
        f"dn: cn=staff,{GROUPS}\nobjectClass: groupOfNames\ncn: staff\nmember: uid=casuser,{PEOPLE}\n",
        f"dn: cn=faculty,{GROUPS}\nobjectClass: groupOfNames\ncn: faculty\nmember: uid=casuser,{PEOPLE}\n"
        f"member: uid=doe\\, john,{PEOPLE}\n",
    ])


# Entries changed after the add (operational attributes the overlay owns).
CHANGES = f"""dn: uid=locked,{PEOPLE}
changetype: modify
add: pwdAccountLockedTime
pwdAccountLockedTime: 000001010000Z

dn: uid=mustchange,{PEOPLE}
changetype: modify
add: pwdReset
pwdReset: TRUE
"""


class Slapd:
    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.tls_port = _free_port()
        self.log_path = self.dir / "slapd.log"
        self.proc: subprocess.Popen | None = None
        self.ca, cert, key = make_tls(self.dir)
        conf = self.dir / "slapd.d"
        conf.mkdir()
        (self.dir / "data").mkdir()
        ldif = self.dir / "config.ldif"
        ldif.write_text(config_ldif(self.dir, self.ca, cert, key))
        subprocess.run([_tool("slapadd"), "-n0", "-F", str(conf), "-l", str(ldif)],
                       check=True, capture_output=True)
        self.conf = conf
        self.start()
        self.ldapadd(data_ldif())
        self.ldapmodify(CHANGES)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://localhost:{self.tls_port}"

    def start(self, timeout: float = 15.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [_tool("slapd"), "-d", "stats", "-F", str(self.conf),
             "-h", f"ldap://127.0.0.1:{self.port}/ ldaps://localhost:{self.tls_port}/"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"slapd did not listen within {timeout}s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def _client(self, tool: str, ldif: str) -> None:
        r = subprocess.run(
            [tool, "-x", "-H", self.url, "-D", ADMIN_DN, "-w", ADMIN_PW],
            input=ldif.encode(), capture_output=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"{tool} failed: {r.stderr.decode()}")

    def ldapadd(self, ldif: str) -> None:
        self._client("ldapadd", ldif)

    def ldapmodify(self, ldif: str) -> None:
        self._client("ldapmodify", ldif)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def accepted(self) -> int:
        """TCP connections slapd accepted so far."""
        return len(re.findall(r" ACCEPT from ", self.log_text()))

    def binds(self, dn: str) -> int:
        return self.log_text().count(f'BIND dn="{dn}"')
