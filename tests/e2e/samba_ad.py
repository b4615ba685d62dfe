"""A throwaway Samba Active Directory domain controller for the AD tests.

Debian's samba (packages samba, samba-ad-provision): `samba-tool domain
provision` into a temporary directory, then `samba -i` in the foreground
with only its LDAP service. Samba's LDAP ports are fixed (389 and 636), so
this needs root and free ports; `available()` says why not otherwise.
Simple binds over plain LDAP are allowed (`ldap server require strong auth
= no`) so that the test needs no trust in Samba's self-signed certificate.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REALM = "CASTELLAN.TEST"
BASE = "DC=castellan,DC=test"
ADMIN_DN = f"CN=Administrator,CN=Users,{BASE}"
ADMIN_PW = "Passw0rd!x9"
PASSWORD = "Mellon-ad1"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def available() -> str | None:
    if not shutil.which("samba") or not shutil.which("samba-tool"):
        return "samba not installed (Debian packages samba, samba-ad-provision)"
    if not Path("/usr/share/samba/setup/ad-schema").exists():
        return "samba-ad-provision not installed"
    if os.geteuid() != 0:
        return "Samba's LDAP ports are fixed (389/636): needs root"
    if not (_port_free(389) and _port_free(636)):
        return "port 389 or 636 is in use"
    return None


class SambaDC:
    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir)
        self.conf = self.dir / "etc" / "smb.conf"
        self.log_path = self.dir / "samba.log"
        subprocess.run(
            ["samba-tool", "domain", "provision", f"--realm={REALM}", "--domain=CASTELLAN",
             "--server-role=dc", "--dns-backend=NONE", f"--adminpass={ADMIN_PW}",
             f"--targetdir={self.dir}", "--option=interfaces=lo", "--option=bind interfaces only=yes",
             ],
            check=True, capture_output=True, timeout=180,
        )
        # Not all --option values are written to smb.conf: the ones the
        # test needs go last in [global] (a later line wins).
        conf = self.conf.read_text()
        conf = conf.replace("\tworkgroup = CASTELLAN\n", "\tworkgroup = CASTELLAN\n"
                            "\tldap server require strong auth = no\n"
                            "\tserver services = ldap\n"
                            f"\tlog file = {self.dir}/log.%m\n", 1)
        self.conf.write_text(conf)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["samba", "-i", "-s", str(self.conf), "--debug-stdout"],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"samba exited: {self.log_path.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", 389), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError("samba did not listen on 389 within 60 s")

    def tool(self, *args: str) -> None:
        subprocess.run(["samba-tool", *args, "-s", str(self.conf)], check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # samba -i forks its worker processes: end the group it leads.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
